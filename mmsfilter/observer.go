package mmsfilter

// Observer receives what the filter sees, for metrics and logs. Every
// argument is a small enum with a label-safe String() and a Num… bound, so
// an implementation can resolve its counters once into arrays and the
// per-message path allocates nothing. Methods are called from both stream
// goroutines of a connection at once, so implementations must be safe for
// concurrent use, and they must be quick: they run inline on the relay path.
type Observer interface {
	// Message is called for every MMS message seen, in either direction,
	// before the session acts on it. Data packets are not messages.
	Message(dir Direction, mid MID)
	// Transition is called when the session moves: funnel rewritten,
	// playlist entry ended, stream changed, … (see Transition).
	Transition(t Transition)
	// Problem is called for what the filter could not handle: p is the
	// counter, err the detail for a log line (a sentinel of this package,
	// possibly wrapped, or the FunnelFunc's or reader's own error). The
	// four framing problems (ProblemBadSessionID through
	// ProblemDataBeforeCommand) switched that direction to raw relaying
	// for the rest of the connection and are reported once.
	Problem(dir Direction, p Problem, err error)
}

// NopObserver ignores everything; it is the default when no Observer is
// given.
type NopObserver struct{}

var _ Observer = NopObserver{}

// Message does nothing.
func (NopObserver) Message(Direction, MID) {}

// Transition does nothing.
func (NopObserver) Transition(Transition) {}

// Problem does nothing.
func (NopObserver) Problem(Direction, Problem, error) {}

// Transition is a session event.
type Transition uint8

// Transitions, with the message that causes each (PROTOCOL.md §2, §4).
const (
	// TransitionConnected: ReportConnectedEX.
	TransitionConnected Transition = iota
	// TransitionFunnelUDPRewritten: a UDP ConnectFunnel was rewritten to
	// the address the FunnelFunc returned.
	TransitionFunnelUDPRewritten
	// TransitionFunnelTCP: a TCP ConnectFunnel passed unchanged (data will
	// flow on the control connection).
	TransitionFunnelTCP
	// TransitionFunnelAccepted: ReportConnectedFunnel.
	TransitionFunnelAccepted
	// TransitionFunnelRefused: ReportDisconnectedFunnel; a client may now
	// retry with a TCP funnel on the same connection (§4.c).
	TransitionFunnelRefused
	// TransitionFileOpened: ReportOpenFile with hr 0.
	TransitionFileOpened
	// TransitionFileOpenFailed: ReportOpenFile with hr ≠ 0.
	TransitionFileOpenFailed
	// TransitionPlaying: ReportStartedPlaying with hr 0 (first entry,
	// after a seek, or the next playlist entry).
	TransitionPlaying
	// TransitionEntryEnd: ReportEndOfStream with hr 1: this playlist entry
	// is over and a StreamChange follows.
	TransitionEntryEnd
	// TransitionStreamChange: ReportStreamChange: the next playlist entry
	// is coming; WMP rebinds its UDP port now (§4.b).
	TransitionStreamChange
	// TransitionPlaylistEnd: ReportEndOfStream with hr 0 not answering a
	// StopPlaying. Pre-v9 servers also send hr 0 between entries, so one
	// followed by TransitionStreamChange was an entry end.
	TransitionPlaylistEnd
	// TransitionStopped: ReportEndOfStream with hr 0 after the client's
	// StopPlaying (pause, seek).
	TransitionStopped
	// TransitionStreamError: ReportEndOfStream with an error hr.
	TransitionStreamError
	// TransitionRedirected: ReportRedirect; the client will reconnect.
	TransitionRedirected
	// TransitionFileClosed: the client's CloseFile.
	TransitionFileClosed

	// NumTransitions is the number of transitions, for sizing arrays.
	NumTransitions
)

// String returns the label-safe name of the transition.
func (t Transition) String() string {
	switch t {
	case TransitionConnected:
		return "connected"
	case TransitionFunnelUDPRewritten:
		return "funnel_udp_rewritten"
	case TransitionFunnelTCP:
		return "funnel_tcp"
	case TransitionFunnelAccepted:
		return "funnel_accepted"
	case TransitionFunnelRefused:
		return "funnel_refused"
	case TransitionFileOpened:
		return "file_opened"
	case TransitionFileOpenFailed:
		return "file_open_failed"
	case TransitionPlaying:
		return "playing"
	case TransitionEntryEnd:
		return "entry_end"
	case TransitionStreamChange:
		return "stream_change"
	case TransitionPlaylistEnd:
		return "playlist_end"
	case TransitionStopped:
		return "stopped"
	case TransitionStreamError:
		return "stream_error"
	case TransitionRedirected:
		return "redirected"
	case TransitionFileClosed:
		return "file_closed"
	}
	return "unknown"
}

// Problem is something the filter could not handle. The bytes concerned are
// always forwarded; a Problem only tells what was not understood.
type Problem uint8

// Problems.
const (
	// ProblemBadSessionID: a command was due but bytes 4–7 were not
	// 0xB00BFACE (client side: the peer does not speak MMS). Pass-through.
	ProblemBadSessionID Problem = iota
	// ProblemBadSeal: sessionId matched but bytes 12–15 were not "MMS ".
	// Pass-through.
	ProblemBadSeal
	// ProblemBadLength: a command's messageLength was below one message or
	// above MaxCommandLen, or a Data packet's PacketSize was below 8.
	// Pass-through.
	ProblemBadLength
	// ProblemDataBeforeCommand: the server's first packet was not a
	// command (a server starts with ReportConnectedEX), so the stream is
	// not MMS. Pass-through.
	ProblemDataBeforeCommand
	// ProblemTruncated: the stream ended (EOF or read error) inside a
	// packet; the partial bytes were forwarded.
	ProblemTruncated
	// ProblemBadChunkLen: a framed command's messages do not add up
	// (chunkLen 0 or past the packet). The packet was forwarded unchanged,
	// messages from the bad one on were not reported, framing goes on.
	ProblemBadChunkLen
	// ProblemFunnelMalformed: a ConnectFunnel whose funnel name did not
	// parse; forwarded unchanged.
	ProblemFunnelMalformed
	// ProblemFunnelRewriteFailed: a UDP ConnectFunnel the FunnelFunc
	// refused (or returned an unusable address for, or that would not fit
	// MaxCommandLen); forwarded unchanged, so the server will send UDP to
	// the proxy at the client's port.
	ProblemFunnelRewriteFailed
	// ProblemLoggingMalformed: a client Logging message without the
	// CLIENT_LOG layout whose address and computer name the filter hides;
	// forwarded unchanged.
	ProblemLoggingMalformed

	// NumProblems is the number of problems, for sizing arrays.
	NumProblems
)

// String returns the label-safe name of the problem.
func (p Problem) String() string {
	switch p {
	case ProblemBadSessionID:
		return "bad_session_id"
	case ProblemBadSeal:
		return "bad_seal"
	case ProblemBadLength:
		return "bad_length"
	case ProblemDataBeforeCommand:
		return "data_before_command"
	case ProblemTruncated:
		return "truncated"
	case ProblemBadChunkLen:
		return "bad_chunk_len"
	case ProblemFunnelMalformed:
		return "funnel_malformed"
	case ProblemFunnelRewriteFailed:
		return "funnel_rewrite_failed"
	case ProblemLoggingMalformed:
		return "logging_malformed"
	}
	return "unknown"
}
