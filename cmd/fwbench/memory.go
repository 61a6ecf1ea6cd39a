package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// memoryFirstPort is the first client port of the memory scenario; below
// the kernel's ephemeral ports, clear of the driver's own sockets.
const memoryFirstPort = 20000

// leaseKind is how the memory scenario keeps its leases idle.
type leaseKind int

const (
	// heldLeases: each lease is held by a live, silent UDP association (a
	// TCP connection, a relay socket and the external socket: three
	// descriptors in fwproxy).
	heldLeases leaseKind = iota
	// lingeringLeases: each association was closed the careful way and its
	// lease lingers with its external socket only, as between two playlist
	// items (one descriptor).
	lingeringLeases
)

// fdsPerLease is fwproxy's descriptors per lease of each kind.
var fdsPerLease = [...]int{heldLeases: 3, lingeringLeases: 1}

var leaseKindNames = [...]string{heldLeases: "held by idle associations", lingeringLeases: "lingering"}

// benchMemory measures fwproxy's RSS with idle leases of both kinds, each
// kind on a fresh fwproxy with raised lease caps: the growth over the idle
// process divided by the number of leases. A count that would not fit the
// open-file limit is skipped and said so.
func (b *bench) benchMemory(ctx context.Context, counts []int) error {
	limit := fileLimit()
	for _, kind := range []leaseKind{heldLeases, lingeringLeases} {
		fit, cut := leaseCountsWithin(counts, limit, fdsPerLease[kind])
		if cut > 0 {
			b.log.Warn("memory: fewer leases, the open-file limit is too low", "kind", leaseKindNames[kind], "measured", cut, "limit", limit)
		}
		if len(fit) == 0 {
			// Not a silent gap in the report: the run fails and says why.
			return fmt.Errorf("%s leases: the open-file limit (%d) leaves no room for any of %v", leaseKindNames[kind], limit, counts)
		}
		// fwproxy, then the baseline binary, each on a fresh instance.
		for _, m := range b.memorySystems() {
			if err := b.memoryOf(ctx, m.sys, m.bin, kind, fit); err != nil {
				return fmt.Errorf("%s, %s leases: %w", systemNames[m.sys], leaseKindNames[kind], err)
			}
		}
	}
	return nil
}

// leaseCountsWithin is the ascending list of counts that fit an open-file
// limit at fdsPer descriptors a lease (256 kept for the rest): a count
// over it is cut to the largest round thousand that fits, or hundred
// under a low limit; cut is that count when one was cut, else 0.
func leaseCountsWithin(counts []int, limit, fdsPer int) (fit []int, cut int) {
	most := max(limit-256, 0) / fdsPer
	if most >= 1000 {
		most = most / 1000 * 1000
	} else {
		most = most / 100 * 100
	}
	for _, n := range counts {
		if n > most {
			n, cut = most, most
		}
		if n > 0 && (len(fit) == 0 || n > fit[len(fit)-1]) {
			fit = append(fit, n)
		}
	}
	return fit, cut
}

// memorySystem is one binary the memory scenario measures.
type memorySystem struct {
	sys system
	bin string
}

func (b *bench) memorySystems() []memorySystem {
	ms := []memorySystem{{sysFwproxy, b.bin}}
	if b.baselineBin != "" {
		ms = append(ms, memorySystem{sysBaseline, b.baselineBin})
	}
	return ms
}

func (b *bench) memoryOf(ctx context.Context, sys system, bin string, kind leaseKind, counts []int) error {
	most := 0
	for _, n := range counts {
		most = max(most, n)
	}
	// A linger longer than the scenario, so no lease expires while measured.
	fw, err := startFwproxy(ctx, bin, b.dir, fwproxyOptions{maxLeases: most, linger: 10 * time.Minute})
	if err != nil {
		return err
	}
	defer fw.stop()
	settle := func() error {
		select {
		case <-time.After(time.Second):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := settle(); err != nil {
		return err
	}
	base, err := fw.rssKiB()
	if err != nil {
		return err
	}
	name := leaseKindNames[kind]
	b.res.fig(fmt.Sprintf("rss/%d/0", kind), "RSS, no lease (before "+name+")", "MiB", lowerIsBetter).set(sys, float64(base)/1024)

	var conns []*net.TCPConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	opened := 0
	for _, n := range counts {
		more, err := openIdleLeases(ctx, fw.addr, kind, opened, n-opened)
		conns = append(conns, more...)
		if err != nil {
			return fmt.Errorf("%d open: %w", opened, err)
		}
		opened = n
		if err := settle(); err != nil {
			return err
		}
		rss, err := fw.rssKiB()
		if err != nil {
			return err
		}
		key := fmt.Sprintf("rss/%d/%d", kind, n)
		if kind == lingeringLeases {
			key = fmt.Sprintf("rss/%d", n) // the target
		}
		b.res.fig(key+"/total", fmt.Sprintf("RSS, %d leases %s", n, name), "MiB", lowerIsBetter).set(sys, float64(rss)/1024)
		per := float64(rss-base) / float64(n)
		b.res.fig(key+"/per", fmt.Sprintf("RSS per idle lease, %d leases %s", n, name), "KiB", lowerIsBetter).set(sys, per)
		if kind == heldLeases && n == most {
			// Issue 15's target, at the most held leases the open-file
			// limit let the run make.
			b.res.fig("rss/held/most/per", fmt.Sprintf("RSS per lease held by an idle association, at the most measured (%d)", n), "KiB", lowerIsBetter).set(sys, per)
		}
	}
	return nil
}

// openIdleLeases makes n idle leases for client ports from
// memoryFirstPort+first on, eight at a time. For held leases it returns
// the associations' control connections, which keep them.
func openIdleLeases(ctx context.Context, proxy string, kind leaseKind, first, n int) ([]*net.TCPConn, error) {
	const workers = 8
	conns := make([]*net.TCPConn, n)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n && ctx.Err() == nil; i += workers {
				port := uint16(memoryFirstPort + first + i)
				c, err := idleLease(ctx, proxy, kind, port)
				if err != nil {
					errs[w] = fmt.Errorf("port %d: %w", port, err)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	var opened []*net.TCPConn
	for _, c := range conns {
		if c != nil {
			opened = append(opened, c)
		}
	}
	for _, err := range errs {
		if err != nil {
			return opened, err
		}
	}
	return opened, ctx.Err()
}

// idleLease associates port; for a lingering lease it then closes the
// association the careful way (half-close, wait for the proxy's close).
func idleLease(ctx context.Context, proxy string, kind leaseKind, port uint16) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	c, _, err := dialSocks(ctx, proxy, cmdUDPAssociate, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port))
	if err != nil || kind == heldLeases {
		return c, err
	}
	defer c.Close()
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(connectTimeout))
	if _, err := io.Copy(io.Discard, c); err != nil {
		return nil, fmt.Errorf("waiting for the proxy's close: %w", err)
	}
	return nil, nil
}

// fileLimit is the open-file limit fwproxy inherits from the driver.
func fileLimit() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	return int(min(lim.Cur, 1<<30))
}
