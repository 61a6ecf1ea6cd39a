package rtspfilter

import "strings"

// Every enum here has a label-safe String() and a Num… bound, so that the
// metrics resolve their counters once into arrays.

// Direction is the way a message travels.
type Direction uint8

const (
	DirClientToServer Direction = iota
	DirServerToClient
	NumDirections
)

func (d Direction) String() string {
	if d == DirClientToServer {
		return "client_to_server"
	}
	return "server_to_client"
}

// Method is an RTSP request method (RFC 2326 §10, RFC 7826 §13).
type Method uint8

const (
	MethodOther Method = iota
	MethodOptions
	MethodDescribe
	MethodAnnounce
	MethodSetup
	MethodPlay
	MethodPause
	MethodTeardown
	MethodGetParameter
	MethodSetParameter
	MethodRedirect
	MethodRecord
	MethodPlayNotify
	NumMethods
)

var methodNames = [NumMethods]string{
	MethodOther:        "other",
	MethodOptions:      "OPTIONS",
	MethodDescribe:     "DESCRIBE",
	MethodAnnounce:     "ANNOUNCE",
	MethodSetup:        "SETUP",
	MethodPlay:         "PLAY",
	MethodPause:        "PAUSE",
	MethodTeardown:     "TEARDOWN",
	MethodGetParameter: "GET_PARAMETER",
	MethodSetParameter: "SET_PARAMETER",
	MethodRedirect:     "REDIRECT",
	MethodRecord:       "RECORD",
	MethodPlayNotify:   "PLAY_NOTIFY",
}

func (m Method) String() string {
	if m < NumMethods {
		return methodNames[m]
	}
	return "other"
}

// methodOf names a request method; methods are case-sensitive (RFC 2326
// §6.1), so "setup" is another method, counted as other.
func methodOf(s string) Method {
	for m := MethodOptions; m < NumMethods; m++ {
		if methodNames[m] == s {
			return m
		}
	}
	return MethodOther
}

// StatusClass is the first digit of a status code.
type StatusClass uint8

const (
	Status1xx StatusClass = iota
	Status2xx
	Status3xx
	Status4xx
	Status5xx
	StatusOther // a code outside 100-599
	NumStatusClasses
)

func (c StatusClass) String() string {
	switch c {
	case Status1xx:
		return "1xx"
	case Status2xx:
		return "2xx"
	case Status3xx:
		return "3xx"
	case Status4xx:
		return "4xx"
	case Status5xx:
		return "5xx"
	}
	return "other"
}

func statusClassOf(code int) StatusClass {
	if code < 100 || code > 599 {
		return StatusOther
	}
	return StatusClass(code/100 - 1)
}

// SetupMode is how a SETUP's UDP reached the client.
type SetupMode uint8

const (
	// SetupJoined: the client's own UDP associations hold the ports
	// (firewall-client mode).
	SetupJoined SetupMode = iota
	// SetupAnnounced: the client tunnels only TCP; the leases send the
	// server's datagrams unwrapped to it.
	SetupAnnounced
	// SetupUnfiltered: no unicast UDP transport (TCP interleaved or
	// multicast), passed unchanged.
	SetupUnfiltered
	// SetupNone: nothing was leased (a refused SETUP).
	SetupNone
	NumSetupModes
)

func (m SetupMode) String() string {
	switch m {
	case SetupJoined:
		return "association"
	case SetupAnnounced:
		return "announced"
	case SetupUnfiltered:
		return "unfiltered"
	}
	return "none"
}

// SetupOutcome is how a SETUP ended.
type SetupOutcome uint8

const (
	// OutcomeAccepted: the server answered 2xx.
	OutcomeAccepted SetupOutcome = iota
	// OutcomeServerRefused: the server answered with an error; what was
	// leased for it is released.
	OutcomeServerRefused
	// OutcomeProxyRefused: the proxy answered the client itself (461 or
	// 453) and the SETUP never reached the server; see README.
	OutcomeProxyRefused
	// OutcomeUnanswered: the connection ended before the server answered.
	OutcomeUnanswered
	NumSetupOutcomes
)

func (o SetupOutcome) String() string {
	switch o {
	case OutcomeAccepted:
		return "accepted"
	case OutcomeServerRefused:
		return "server_refused"
	case OutcomeProxyRefused:
		return "proxy_refused"
	}
	return "unanswered"
}

// TransportAction is what the filter did with one transport spec of a
// SETUP request.
type TransportAction uint8

const (
	// TransportRewritten: a unicast UDP spec whose client_port now names
	// leased external ports.
	TransportRewritten TransportAction = iota
	// TransportPassed: TCP interleaved or multicast, unchanged.
	TransportPassed
	// TransportDropped: a spec the proxy cannot carry (no lease, an
	// unsupported profile or parameter), removed from the list so that the
	// server picks another; when none is left the SETUP is refused.
	TransportDropped
	NumTransportActions
)

func (a TransportAction) String() string {
	switch a {
	case TransportRewritten:
		return "rewritten"
	case TransportPassed:
		return "passed"
	}
	return "dropped"
}

// Problem is something the filter could not handle, or refused.
type Problem uint8

const (
	// ProblemNotRTSP: the direction did not start with an RTSP message;
	// it is relayed untouched for the rest of the connection.
	ProblemNotRTSP Problem = iota
	// ProblemBadStartLine: a message that is neither a request nor a
	// status line after RTSP was seen. Client side: answered 400 and
	// closed. Server side: the rest is relayed untouched.
	ProblemBadStartLine
	// ProblemHeaderTooLarge: a header block above MaxHeadBytes (handled
	// as ProblemBadStartLine).
	ProblemHeaderTooLarge
	// ProblemTooManyHeaders: more than MaxHeaders header lines (handled
	// as ProblemBadStartLine).
	ProblemTooManyHeaders
	// ProblemBadHeader: a header line without a name and colon, or a
	// Content-Length that is not one decimal number (handled as
	// ProblemBadStartLine: the body's end cannot be found).
	ProblemBadHeader
	// ProblemTruncated: the stream ended inside a message; what was
	// read was forwarded.
	ProblemTruncated
	// ProblemBadTransport: a SETUP Transport header that does not parse,
	// or has more than MaxTransportSpecs specs: the SETUP is refused.
	ProblemBadTransport
	// ProblemUnsupportedTransport: a UDP spec the filter cannot rewrite
	// (an unknown profile, client_port 0 or missing, a bad RTSP 2.0
	// dest_addr, an address named twice): dropped from the list.
	ProblemUnsupportedTransport
	// ProblemLeaseFailed: no lease group for a spec's ports: dropped
	// from the list.
	ProblemLeaseFailed
	// ProblemGroupLimit: the connection holds MaxGroups lease groups
	// (or has maxPending SETUPs unanswered): the spec is dropped.
	ProblemGroupLimit
	// ProblemSessionLimit: the SETUP would start another session holding
	// leases beyond MaxSessions: its UDP specs are dropped.
	ProblemSessionLimit
	// ProblemReplyUnmatched: a SETUP reply whose Transport names no
	// ports the filter leased for it: forwarded unchanged.
	ProblemReplyUnmatched
	// ProblemUnfilteredSetup: a SETUP request line inside a client
	// stream relayed untouched (ProblemNotRTSP): the connection is
	// closed before it reaches the server.
	ProblemUnfilteredSetup
	NumProblems
)

var problemNames = [NumProblems]string{
	ProblemNotRTSP:              "not_rtsp",
	ProblemBadStartLine:         "bad_start_line",
	ProblemHeaderTooLarge:       "header_too_large",
	ProblemTooManyHeaders:       "too_many_headers",
	ProblemBadHeader:            "bad_header",
	ProblemTruncated:            "truncated",
	ProblemBadTransport:         "bad_transport",
	ProblemUnsupportedTransport: "unsupported_transport",
	ProblemLeaseFailed:          "lease_failed",
	ProblemGroupLimit:           "group_limit",
	ProblemSessionLimit:         "session_limit",
	ProblemReplyUnmatched:       "reply_unmatched",
	ProblemUnfilteredSetup:      "unfiltered_setup",
}

func (p Problem) String() string {
	if p < NumProblems {
		return problemNames[p]
	}
	return "unknown"
}

// equalFold is ASCII case-insensitive comparison, for header and
// parameter names.
func equalFold(a, b string) bool { return strings.EqualFold(a, b) }
