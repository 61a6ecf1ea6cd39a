package proxy

import "time"

// Observer receives what the server does, for metrics. Arguments are bounded
// label values (command and reply names, reasons), never addresses, so an
// implementation can resolve its series once. Calls come from many
// goroutines at once and must not block.
type Observer interface {
	// ConnectionRejected reports a connection closed before its handshake:
	// "client_not_allowed", "session_limit" or "client_session_limit".
	ConnectionRejected(reason string)
	// SessionsChanged adds delta (+1 or -1) to the open-session count.
	SessionsChanged(delta int)
	// HandshakeFailed reports a session that ended before a request could be
	// answered normally, with a reason such as "timeout", "bad_version",
	// "no_acceptable_method", "auth_failed", "auth_busy" (no password check
	// could start before the handshake deadline), "truncated",
	// "bad_address_type", "bad_domain".
	HandshakeFailed(reason string)
	// DestinationRefused reports a CONNECT or BIND destination, an address
	// a requested name resolved to, or a BIND peer, refused with one of
	// RefusalReasons ("unspecified", "multicast", "broadcast",
	// "proxy_host", "own_socket", "rules", "client_network"). UDP datagrams are counted by
	// outcome in UDPCounters instead.
	DestinationRefused(reason string)
	// Authenticated reports the outcome of one authentication ("no_auth" or
	// "username_password"); a login that got no verdict (cut short, or no
	// check slot in time) is not reported.
	Authenticated(method string, ok bool)
	// LoginRateLimited reports a username/password login refused without a
	// password check because its source failed too often.
	LoginRateLimited()
	// Request reports one answered request: its command, the reply code
	// sent, how long the handshake took (accept to request read) and how long
	// the destination took to reach (0 when nothing was dialled).
	Request(command, reply string, handshake, dial time.Duration)
	// Relayed reports n bytes relayed: "client_to_target" or
	// "target_to_client".
	Relayed(direction string, n int)
	// ActiveChanged adds delta to the count of live UDP associations
	// ("udp_associate") or BIND sessions ("bind").
	ActiveChanged(command string, delta int)
	// UDPCounters returns the counters of datagrams and of their payload
	// bytes for one direction ("client_to_remote", "remote_to_client") and
	// outcome ("relayed" or a drop reason). The server asks once per pair at
	// start, so the datagram path only adds to counters it holds.
	UDPCounters(direction, outcome string) (datagrams, bytes Counter)
	// ConnectExpectation reports what happened to a CONNECT a filter
	// expected (ConnectExpecter): one of ConnectExpectOutcomes.
	ConnectExpectation(outcome string)
}

// Counter is a monotonic counter; prometheus.Counter is one.
type Counter = interface{ Add(float64) }

// Direction labels of Observer.Relayed.
const (
	DirClientToTarget = "client_to_target"
	DirTargetToClient = "target_to_client"
)

type nopObserver struct{}

func (nopObserver) ConnectionRejected(string)                            {}
func (nopObserver) SessionsChanged(int)                                  {}
func (nopObserver) HandshakeFailed(string)                               {}
func (nopObserver) DestinationRefused(string)                            {}
func (nopObserver) Authenticated(string, bool)                           {}
func (nopObserver) LoginRateLimited()                                    {}
func (nopObserver) Request(string, string, time.Duration, time.Duration) {}
func (nopObserver) Relayed(string, int)                                  {}

var _ Observer = nopObserver{}

func (nopObserver) ActiveChanged(string, int) {}
func (nopObserver) ConnectExpectation(string) {}
func (nopObserver) UDPCounters(string, string) (Counter, Counter) {
	return nopCounter{}, nopCounter{}
}

type nopCounter struct{}

func (nopCounter) Add(float64) {}
