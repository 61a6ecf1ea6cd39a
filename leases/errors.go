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
	// ErrGroupLayout: AcquireGroup cannot lay its keys out on consecutive
	// ports: keys that already have leases are not on one run of
	// consecutive ports (or it breaks EvenFirst, or leaves the range), or
	// ExactPorts was asked for keys whose own ports are not consecutive or
	// break EvenFirst.
	ErrGroupLayout = errors.New("lease group cannot be laid out on consecutive ports")
	// ErrBadRequest: the Request or Key is malformed (no Deliver, unknown
	// Kind, invalid client address), or a GroupRequest is (no keys, more
	// than 16, a key twice, a member count that differs from the keys', a
	// member with WantPort or ExactPort).
	ErrBadRequest = errors.New("invalid lease request")
)
