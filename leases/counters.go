package leases

type countPair struct{ n, bytes int }

type readerCounts struct {
	delivered, buffered countPair
	dropped             [NumDropReasons]countPair
	pending             int // datagrams counted since the last flush
}

// maxPendingCounts bounds how stale the metrics get under a flood that never
// lets the socket drain (and so never reaches the idle flush).
const maxPendingCounts = 64

func (p *countPair) add(bytes int) {
	p.n++
	p.bytes += bytes
}

// flushCounts reports what the reader counted since the last flush. It runs
// on the reader goroutine only.
func (l *lease) flushCounts() {
	c := &l.counts
	if c.pending == 0 {
		return
	}
	obs := l.m.obs
	if c.delivered.n > 0 {
		obs.Datagrams(OutcomeDelivered, ReasonNone, c.delivered.n, c.delivered.bytes)
	}
	if c.buffered.n > 0 {
		obs.Datagrams(OutcomeBuffered, ReasonNone, c.buffered.n, c.buffered.bytes)
	}
	for r := range c.dropped {
		if c.dropped[r].n > 0 {
			obs.Datagrams(OutcomeDropped, DropReason(r), c.dropped[r].n, c.dropped[r].bytes)
		}
	}
	*c = readerCounts{}
}
