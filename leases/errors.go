package leases

import "errors"

// Sentinel errors that callers branch on. Acquire wraps them as
// "leases: acquire <key>: <sentinel>", so test with errors.Is.
var (
	// ErrPortTaken: the wanted external port is held by a different key (or
	// by another program) and the request set ExactPort.
	ErrPortTaken = errors.New("external port taken")
	// ErrPortOutOfRange: ExactPort was set for a port outside [PortMin, PortMax].
	ErrPortOutOfRange = errors.New("external port outside the configured range")
	// ErrClientLimit: the client IP already holds MaxLeasesPerClient leases and
	// none of them is lingering (which would have been evicted).
	ErrClientLimit = errors.New("per-client lease limit reached")
	// ErrTableFull: the table holds MaxLeases leases and none is lingering.
	ErrTableFull = errors.New("lease table full")
	// ErrNoPort: no port in [PortMin, PortMax] could be bound.
	ErrNoPort = errors.New("no free external port in range")
	// ErrClosed: the Manager is closed (or closing).
	ErrClosed = errors.New("lease manager closed")
	// ErrOwnSocket: Send or WriteTo was asked to send to one of the
	// proxy's own sockets (Deps.Self); nothing was sent.
	ErrOwnSocket = errors.New("destination is one of the proxy's own sockets")
	// ErrReleased: the Holder was released; it can no longer send.
	ErrReleased = errors.New("lease holder released")
	// ErrBadRequest: the Request or Key is malformed (no Deliver, unknown
	// Kind, invalid client address).
	ErrBadRequest = errors.New("invalid lease request")
)
