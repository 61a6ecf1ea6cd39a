package proxy

import (
	"context"
	"io"
	"net/netip"
)

// Filter is an application-level filter for CONNECT sessions to the ports it
// is registered for (Deps.Filters). The MMS filter is one; the proxy knows
// none of them by name.
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
