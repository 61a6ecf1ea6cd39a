package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"fwproxy/internal/selfaddr"
)

// A filter that learns from its protocol that the client will open another
// TCP connection it must see (an MMS server redirecting the player to
// another port of itself) expects it: the next CONNECT of that client to
// that address runs through the same filter even when the port has none.
// An expectation is the TCP half of a conntrack helper's: short-lived,
// used once, and bounded per client and in all, since the server that
// causes it is on the far side.
const (
	// ConnectExpectTTL is how long an expected CONNECT stays expected: a
	// redirected client reconnects at once.
	ConnectExpectTTL = 30 * time.Second
	// MaxConnectExpectsPerClient bounds the live expectations of one
	// client (IP and user); one more is refused.
	MaxConnectExpectsPerClient = 4
	// MaxConnectExpects bounds them in all.
	MaxConnectExpects = 4096
)

// Outcomes of Observer.ConnectExpectation.
const (
	ExpectAdded             = "expected"
	ExpectUsed              = "used"
	ExpectExpired           = "expired"
	ExpectRefusedClientCap  = "refused_client_limit"
	ExpectRefusedTableFull  = "refused_table_full"
	ExpectRefusedNotAllowed = "refused_not_allowed"
)

// ErrConnectExpectLimit is returned by ExpectConnect at a cap.
var ErrConnectExpectLimit = errors.New("proxy: too many expected connections")

// ConnectExpecter is what a filter session may use to expect a further
// CONNECT of its client (SessionInfo.Connects).
type ConnectExpecter interface {
	// ExpectConnect makes the next CONNECT of the session's client (same
	// IP, same user) to dst, within ConnectExpectTTL, run through the
	// calling filter, whatever dst's port. It only picks the filter: the
	// CONNECT is judged as any other, so it never lets a client reach what
	// the rules refuse, and a destination the proxy never connects to
	// (its own sockets, multicast, …) is not expected at all. Asking again
	// for the same dst renews it. At a cap it fails with
	// ErrConnectExpectLimit, counted.
	ExpectConnect(dst netip.AddrPort) error
}

// expectKey is a client as expectations know it.
type expectKey struct {
	client netip.Addr
	user   string
}

type expectedConnect struct {
	dst     netip.AddrPort
	filter  Filter
	expires time.Time
}

// connectExpects is the server's table of expected CONNECTs. Expired
// entries are dropped when their client's list is next touched, or all at
// once when the table is full, so no timer is needed.
type connectExpects struct {
	obs Observer
	now func() time.Time

	// mu guards byClient and total.
	mu       sync.Mutex
	byClient map[expectKey][]expectedConnect
	total    int
}

func newConnectExpects(obs Observer, now func() time.Time) *connectExpects {
	return &connectExpects{obs: obs, now: now, byClient: make(map[expectKey][]expectedConnect)}
}

// add records that k's next CONNECT to dst runs through f.
func (e *connectExpects) add(k expectKey, dst netip.AddrPort, f Filter) error {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	list := e.pruneLocked(k, now)
	for i := range list {
		if list[i].dst == dst {
			list[i] = expectedConnect{dst: dst, filter: f, expires: now.Add(ConnectExpectTTL)}
			e.obs.ConnectExpectation(ExpectAdded)
			return nil
		}
	}
	if len(list) >= MaxConnectExpectsPerClient {
		e.obs.ConnectExpectation(ExpectRefusedClientCap)
		return fmt.Errorf("expect CONNECT to %v: %w for this client (%d)", dst, ErrConnectExpectLimit, MaxConnectExpectsPerClient)
	}
	if e.total >= MaxConnectExpects {
		for other := range e.byClient {
			e.pruneLocked(other, now)
		}
		list = e.byClient[k]
	}
	if e.total >= MaxConnectExpects {
		e.obs.ConnectExpectation(ExpectRefusedTableFull)
		return fmt.Errorf("expect CONNECT to %v: %w (%d)", dst, ErrConnectExpectLimit, MaxConnectExpects)
	}
	e.byClient[k] = append(list, expectedConnect{dst: dst, filter: f, expires: now.Add(ConnectExpectTTL)})
	e.total++
	e.obs.ConnectExpectation(ExpectAdded)
	return nil
}

// take returns the filter expected for k's CONNECT to dst and forgets the
// expectation, or nil.
func (e *connectExpects) take(k expectKey, dst netip.AddrPort) Filter {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	list := e.pruneLocked(k, now)
	for i, x := range list {
		if x.dst != dst {
			continue
		}
		list = append(list[:i], list[i+1:]...)
		e.total--
		if len(list) == 0 {
			delete(e.byClient, k)
		} else {
			e.byClient[k] = list
		}
		e.obs.ConnectExpectation(ExpectUsed)
		return x.filter
	}
	return nil
}

// pruneLocked drops k's expired expectations and returns what is left.
func (e *connectExpects) pruneLocked(k expectKey, now time.Time) []expectedConnect {
	list := e.byClient[k]
	kept := list[:0]
	for _, x := range list {
		if now.Before(x.expires) {
			kept = append(kept, x)
			continue
		}
		e.total--
		e.obs.ConnectExpectation(ExpectExpired)
	}
	if len(kept) == 0 {
		delete(e.byClient, k)
		return nil
	}
	e.byClient[k] = kept
	return kept
}

// sessionExpecter is one filter session's ConnectExpecter.
type sessionExpecter struct {
	ss     *session
	filter Filter
}

func (x sessionExpecter) ExpectConnect(dst netip.AddrPort) error {
	dst = normalise(dst)
	s := x.ss.srv
	if r := s.judge(dst, selfaddr.TCP, false); r != refusedNone {
		s.obs.ConnectExpectation(ExpectRefusedNotAllowed)
		return fmt.Errorf("expect CONNECT to %v: refused: %s", dst, r)
	}
	return s.expects.add(expectKey{client: x.ss.client.Addr(), user: x.ss.user}, dst, x.filter)
}
