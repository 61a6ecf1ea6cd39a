package leases

// Observer receives the Manager's counters. The metrics package implements it
// with pre-resolved Prometheus counters; every argument is a small enum whose
// String is a valid label value, so reporting never allocates. Methods are
// called from many goroutines, never with a Manager or lease lock held, but
// sometimes from a lease's reader while it owns the socket's read side (so a
// Close waits for them): they must be fast and must not call the Manager.
type Observer interface {
	// LeaseEvent counts one lease transition.
	LeaseEvent(e Event)
	// Datagrams counts n inbound datagrams carrying bytes payload bytes that
	// met outcome o (and, reason own_socket only, outbound ones Send refused). reason is ReasonNone unless o is OutcomeDropped.
	// The reader sums a burst of datagrams before reporting.
	Datagrams(o Outcome, reason DropReason, n, bytes int)
	// AcquireFailed counts one Acquire that returned an error.
	AcquireFailed(r FailReason)
}

// NopObserver discards everything.
type NopObserver struct{}

var _ Observer = NopObserver{}

func (NopObserver) LeaseEvent(Event)                        {}
func (NopObserver) Datagrams(Outcome, DropReason, int, int) {}
func (NopObserver) AcquireFailed(FailReason)                {}

// Event is a lease transition.
type Event uint8

const (
	// EventAcquire: a new lease and socket were created.
	EventAcquire Event = iota + 1
	// EventReclaim: a lingering lease got a holder again (same socket and
	// port; its buffer is flushed to the new holder).
	EventReclaim
	// EventHandover: Acquire met a live holder of the same kind; the new
	// holder became the delivery target, the old one stays until released.
	EventHandover
	// EventJoin: a holder of a kind the lease had no live holder of joined an
	// active lease (for example an MMS session joining a UDP association).
	EventJoin
	// EventRelease: a holder was released. A repeated Release, or one
	// after its lease closed (expired, evicted), is not counted.
	EventRelease
	// EventExpire: a lingering lease reached its deadline and was closed.
	EventExpire
	// EventClose: a lease was closed because its last holder left with
	// Linger 0, or because the Manager closed.
	EventClose
	// EventEvict: a lingering lease was closed early to make room.
	EventEvict

	// NumEvents is one past the last of the events, for sizing arrays
	// indexed by them.
	NumEvents
)

// String returns the label-safe name of the event. Every enum of the
// package names its values in a switch, not a lookup table: no
// package-level mutable state.
func (e Event) String() string {
	switch e {
	case EventAcquire:
		return "acquire"
	case EventReclaim:
		return "reclaim"
	case EventHandover:
		return "handover"
	case EventJoin:
		return "join"
	case EventRelease:
		return "release"
	case EventExpire:
		return "expire"
	case EventClose:
		return "close"
	case EventEvict:
		return "evict"
	}
	return "unknown"
}

// Outcome is what happened to an inbound datagram.
type Outcome uint8

const (
	// OutcomeDelivered: passed to a holder's DeliverFunc as it arrived.
	OutcomeDelivered Outcome = iota + 1
	// OutcomeBuffered: held in the lease's linger buffer.
	OutcomeBuffered
	// OutcomeFlushed: a buffered datagram delivered on reclaim.
	OutcomeFlushed
	// OutcomeDropped: discarded; the DropReason says why.
	OutcomeDropped

	// NumOutcomes is one past the last of the outcomes, for sizing arrays
	// indexed by them.
	NumOutcomes
)

// String returns the label-safe name of the outcome.
func (o Outcome) String() string {
	switch o {
	case OutcomeDelivered:
		return "delivered"
	case OutcomeBuffered:
		return "buffered"
	case OutcomeFlushed:
		return "flushed"
	case OutcomeDropped:
		return "dropped"
	}
	return "unknown"
}

// DropReason says why a datagram was dropped.
type DropReason uint8

const (
	// ReasonNone accompanies every outcome except OutcomeDropped.
	ReasonNone DropReason = iota
	// ReasonNotPermitted: the sender's IP is not a permitted peer.
	ReasonNotPermitted
	// ReasonBufferFull: the lease's buffer cap (datagrams or bytes) was hit.
	ReasonBufferFull
	// ReasonTotalBufferFull: MaxBufferedBytesTotal was hit.
	ReasonTotalBufferFull
	// ReasonNoHolder: no delivery target and no buffering (Linger 0).
	ReasonNoHolder
	// ReasonExpiredUnflushed: still buffered when the linger expired.
	ReasonExpiredUnflushed
	// ReasonEvicted: still buffered when the lease was evicted.
	ReasonEvicted
	// ReasonClosed: buffered or arriving while the lease or Manager closed.
	ReasonClosed
	// ReasonTooLarge: larger than MaxDatagramSize.
	ReasonTooLarge
	// ReasonOwnSocket: a datagram the proxy would have sent from a lease
	// socket to one of its own sockets (Deps.Self): an inbound datagram
	// whose delivery (Holder.WriteTo) was refused, counted instead of
	// delivered or flushed, or a client's datagram refused by Holder.Send.
	ReasonOwnSocket

	// NumDropReasons is one past the last of the drop reasons, for sizing arrays
	// indexed by them.
	NumDropReasons
)

// String returns the label-safe name of the reason.
func (r DropReason) String() string {
	switch r {
	case ReasonNone:
		return "none"
	case ReasonNotPermitted:
		return "not_permitted"
	case ReasonBufferFull:
		return "buffer_full"
	case ReasonTotalBufferFull:
		return "total_buffer_full"
	case ReasonNoHolder:
		return "no_holder"
	case ReasonExpiredUnflushed:
		return "expired_unflushed"
	case ReasonEvicted:
		return "evicted"
	case ReasonClosed:
		return "closed"
	case ReasonTooLarge:
		return "too_large"
	case ReasonOwnSocket:
		return "own_socket"
	}
	return "unknown"
}

// FailReason classifies a failed Acquire.
type FailReason uint8

const (
	FailPortTaken FailReason = iota + 1
	FailPortOutOfRange
	FailClientLimit
	FailTableFull
	FailNoPort
	FailClosed
	FailCanceled
	FailBadRequest
	FailGroupLayout
	FailOther

	// NumFailReasons is one past the last of the fail reasons, for sizing arrays
	// indexed by them.
	NumFailReasons
)

// String returns the label-safe name of the reason.
func (r FailReason) String() string {
	switch r {
	case FailPortTaken:
		return "port_taken"
	case FailPortOutOfRange:
		return "port_out_of_range"
	case FailClientLimit:
		return "client_limit"
	case FailTableFull:
		return "table_full"
	case FailNoPort:
		return "no_port"
	case FailClosed:
		return "closed"
	case FailCanceled:
		return "canceled"
	case FailBadRequest:
		return "bad_request"
	case FailGroupLayout:
		return "group_layout"
	case FailOther:
		return "other"
	}
	return "unknown"
}

// Kind is the type of a holder.
type Kind uint8

const (
	// KindAssociation: a SOCKS5 UDP association of a firewall client.
	KindAssociation Kind = iota + 1
	// KindAnnounced: an application-filter session (MMS) that learned the
	// client port from an announcement.
	KindAnnounced

	// NumKinds is one past the last of the kinds, for sizing arrays indexed
	// by them.
	NumKinds
)

// String returns the label-safe name of the kind.
func (k Kind) String() string {
	switch k {
	case KindAssociation:
		return "association"
	case KindAnnounced:
		return "announced"
	}
	return "unknown"
}

func (k Kind) valid() bool { return k == KindAssociation || k == KindAnnounced }

// State is a lease's life-cycle state.
type State uint8

const (
	// StateActive: at least one holder.
	StateActive State = iota + 1
	// StateLingering: no holder; socket open, buffering until reclaimed or
	// expired.
	StateLingering
	// StateClosing: the socket is being closed; an Acquire for the key waits.
	StateClosing

	// NumStates is one past the last of the states, for sizing arrays
	// indexed by them.
	NumStates
)

// String returns the label-safe name of the state.
func (s State) String() string {
	switch s {
	case StateActive:
		return "active"
	case StateLingering:
		return "lingering"
	case StateClosing:
		return "closing"
	}
	return "unknown"
}
