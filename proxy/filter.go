package proxy

import (
	"context"
	"fmt"
	"io"
	"net/netip"
)

// Filter is an application-level filter for CONNECT sessions to the ports it
// is registered for (Filters.Register). The MMS filter is one; the proxy
// knows none of them by name. A filter package implements it directly.
type Filter interface {
	// Name is a short label for logs and metrics.
	Name() string
	// NewSession is called once the destination is connected and the client
	// has been told so. An error ends the session (the client already has
	// its success reply; both connections are closed).
	NewSession(ctx context.Context, info SessionInfo) (FilterSession, error)
}

// SessionInfo describes the CONNECT session a filter sees.
type SessionInfo struct {
	// Client is the address the client connected from; User is its
	// authenticated user name, "" without authentication.
	Client netip.AddrPort
	User   string
	// Target is the destination; Local is the proxy's own address on the
	// connection to it (its external address towards the target).
	Target netip.AddrPort
	Local  netip.AddrPort
	// Session is the session's id, the "sid" of its log lines, for the
	// filter's own lines.
	Session uint64
	// Connects lets the filter expect the client's next CONNECT to another
	// address (a redirect its protocol announced) to run through it too.
	// Set by the server; nil when a filter runs outside one (tests).
	Connects ConnectExpecter
}

// FilterSession relays one CONNECT session's two byte streams. The proxy
// calls ClientToServer and ServerToClient at once, each on its own
// goroutine. Each copies from src to dst until src ends (return nil: the
// proxy then half-closes dst) or an error (the proxy then closes both
// connections). A filter that does not understand the bytes must pass them
// through untouched. The proxy owns src and dst: the filter must not close
// or keep them. Close is called once, after both copiers returned, and frees
// what the session holds.
type FilterSession interface {
	ClientToServer(ctx context.Context, dst io.Writer, src io.Reader) error
	ServerToClient(ctx context.Context, dst io.Writer, src io.Reader) error
	Close() error
}

// Filters is the table of application filters by destination port. The
// zero value is empty and ready. Build it with Register and hand it to
// the server (Deps.Filters, Server.Reconfigure), which takes a copy: later
// registrations do not reach a running server.
type Filters struct {
	byPort map[uint16]Filter
}

// Register makes f the filter of every CONNECT to one of ports. It is all
// or nothing: when a port is already taken (by another filter, or by f
// itself listed twice) nothing of this call is registered and the error,
// a *FilterClashError wrapping ErrFilterExists, names both and the port.
// A port is never silently given to the later filter.
func (t *Filters) Register(f Filter, ports ...uint16) error {
	if f == nil {
		return fmt.Errorf("proxy: register filter: no filter for ports %v", ports)
	}
	seen := make(map[uint16]bool, len(ports))
	for _, p := range ports {
		if p == 0 {
			return fmt.Errorf("proxy: register filter %q: port 0 is not a port", f.Name())
		}
		if old, ok := t.byPort[p]; ok {
			return &FilterClashError{Port: p, Registered: old.Name(), Refused: f.Name()}
		}
		if seen[p] {
			return &FilterClashError{Port: p, Registered: f.Name(), Refused: f.Name()}
		}
		seen[p] = true
	}
	if t.byPort == nil {
		t.byPort = make(map[uint16]Filter, len(ports))
	}
	for _, p := range ports {
		t.byPort[p] = f
	}
	return nil
}

// Len is the number of ports with a filter.
func (t *Filters) Len() int {
	if t == nil {
		return 0
	}
	return len(t.byPort)
}

// clone copies the table (nil: empty) for a server to keep.
func (t *Filters) clone() map[uint16]Filter {
	out := make(map[uint16]Filter, t.Len())
	if t != nil {
		for p, f := range t.byPort {
			out[p] = f
		}
	}
	return out
}

// FilterClashError is Register's refusal of a port that already has a
// filter.
type FilterClashError struct {
	Port uint16
	// Registered is the name of the filter that has the port; Refused the
	// name of the one that asked for it (the same when a filter lists a
	// port twice).
	Registered, Refused string
}

func (e *FilterClashError) Error() string {
	return fmt.Sprintf("proxy: register filter %q for port %d: the port already runs filter %q; a port has at most one filter", e.Refused, e.Port, e.Registered)
}

// Unwrap makes errors.Is(err, ErrFilterExists) hold.
func (e *FilterClashError) Unwrap() error { return ErrFilterExists }

// passThrough is the session of a CONNECT with no filter.
type passThrough struct{}

func (passThrough) ClientToServer(_ context.Context, dst io.Writer, src io.Reader) error {
	_, err := io.Copy(dst, src)
	return err
}

func (passThrough) ServerToClient(_ context.Context, dst io.Writer, src io.Reader) error {
	_, err := io.Copy(dst, src)
	return err
}

func (passThrough) Close() error { return nil }

var _ FilterSession = passThrough{}
