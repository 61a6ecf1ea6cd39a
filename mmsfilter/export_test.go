package mmsfilter

// Test-only helpers on the package's internals. Nothing outside mmsfilter's
// own tests uses them: the proxy runs Streams, and the peers build packets
// with the exported builders.

import "net/netip"

// BetweenEntries reports whether a server-side playlist is between two
// entries: from EndOfStream hr=1 until the next ReportStartedPlaying. This
// is the window in which WMP closes and rebinds its UDP port, so the
// lease must be kept even if the client's own UDP socket goes away.
func (s *Session) BetweenEntries() bool {
	st := s.State()
	return st == StateEntryEnd || st == StateStreamChange
}

// FunnelMode returns the transport of the last ConnectFunnel the client
// sent (TransportNone before any), whether or not it was rewritten.
func (s *Session) FunnelMode() Transport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.funnel
}

// PassThrough reports whether the problem switches its direction to raw
// relaying for the rest of the connection.
func (p Problem) PassThrough() bool {
	switch p {
	case ProblemBadSessionID, ProblemBadSeal, ProblemBadLength, ProblemDataBeforeCommand:
		return true
	}
	return false
}

// RewriteFunnel appends the command packet at the start of pkt to dst with
// the funnel name of every UDP ConnectFunnel message in it naming to instead
// of the announced address and port (rules at appendFunnelRewrite), and the
// header's messageLength and chunkCount fixed; seq and every other byte
// stay. It returns the announced funnel (the last, if a packet should hold
// several). A TCP funnel is appended unchanged. On error nothing is
// appended: ErrNotFunnel when pkt holds no ConnectFunnel, a funnel-name
// error for a malformed name, ErrReplacement for an unusable to.
func RewriteFunnel(dst, pkt []byte, to netip.AddrPort) ([]byte, Funnel, error) {
	if err := checkReplacement(to); err != nil {
		return dst, Funnel{}, err
	}
	_, n, err := ParsePacket(pkt)
	if err != nil {
		return dst, Funnel{}, err
	}
	pkt = pkt[:n]

	var (
		announced Funnel
		found     bool
		nameErr   error
	)
	out, changed, err := rebuildPacket(dst, pkt, func(dst, msg []byte) ([]byte, bool) {
		found = true
		fn, err := parseFunnelMessage(msg)
		if err != nil {
			nameErr = err
			return append(dst, msg...), false
		}
		announced = fn.Funnel
		if fn.Transport != TransportUDP {
			return append(dst, msg...), false
		}
		return appendFunnelRewrite(dst, msg, fn, to), true
	})
	switch {
	case err != nil:
		return dst, Funnel{}, err
	case !found:
		return dst, Funnel{}, ErrNotFunnel
	case nameErr != nil:
		return dst, Funnel{}, nameErr
	case !changed:
		return append(dst, pkt...), announced, nil
	}
	return out, announced, nil
}
