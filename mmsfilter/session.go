package mmsfilter

import "sync"

// State is where an MMS session stands, as far as the filter can tell from
// the control connection.
type State uint8

// States, in the order a session normally goes through them
// (PROTOCOL.md §4.a, §4.b).
const (
	// StateIdle: nothing from the server yet.
	StateIdle State = iota
	// StateConnected: ReportConnectedEX seen (also after a refused funnel,
	// while the client may retry with TCP).
	StateConnected
	// StateFunnel: the server accepted the funnel.
	StateFunnel
	// StateOpen: a file is open and not playing: after ReportOpenFile, or
	// after a Stop was answered.
	StateOpen
	// StatePlaying: ReportStartedPlaying; data flows.
	StatePlaying
	// StateEntryEnd: EndOfStream hr=1; the next playlist entry is coming.
	StateEntryEnd
	// StateStreamChange: ReportStreamChange seen; the client re-reads the
	// header and starts the next entry.
	StateStreamChange
	// StateEnded: the playlist ended (EndOfStream hr=0) or failed.
	StateEnded
	// StateClosed: the client sent CloseFile.
	StateClosed

	// NumStates is the number of states, for sizing arrays.
	NumStates
)

// String returns the label-safe name of the state.
func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateConnected:
		return "connected"
	case StateFunnel:
		return "funnel"
	case StateOpen:
		return "open"
	case StatePlaying:
		return "playing"
	case StateEntryEnd:
		return "entry_end"
	case StateStreamChange:
		return "stream_change"
	case StateEnded:
		return "ended"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// hrEntryEnd is the ReportEndOfStream hr that announces a StreamChange: the
// end of a playlist entry, not of the playlist ([MS-MMSP] §2.2.4.5).
const hrEntryEnd = 0x00000001

// Session follows one MMS control connection from both directions and
// reports its transitions to an Observer. It is fed by Streams (both
// directions, concurrently) and read by whoever holds the connection's
// UDP lease. Its methods are safe for concurrent use.
type Session struct {
	obs Observer
	// hooks, when set, is the filter's own reaction to the session's
	// events (its UDP expectation's hold, resume and release); set before
	// the streams run and never changed.
	hooks sessionHooks

	// mu guards the fields below it.
	mu     sync.Mutex
	state  State
	funnel Transport
	// stopPending: the client sent StopPlaying and its EndOfStream (hr 0)
	// has not come yet, so that hr 0 means "stopped", not "playlist over".
	stopPending bool
}

// NewSession returns a session in StateIdle reporting to obs (nil: no one).
func NewSession(obs Observer) *Session {
	if obs == nil {
		obs = NopObserver{}
	}
	return &Session{obs: obs}
}

// State returns the current state.
func (s *Session) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// sessionHooks is what the owner of a Session does on its events, apart
// from the Observer, which only counts and logs: the filter's Connection
// drives its UDP expectation from here. Calls come from the goroutine of
// the direction that caused them, outside the session's lock, after the
// observer, and before the message is forwarded: a hook that pauses
// delivery does so before the client can act on the message.
type sessionHooks interface {
	// message: m was seen in direction dir; when moved, it caused t.
	message(dir Direction, m Message, t Transition, moved bool)
	// funnel: the client sent a funnel of transport mode; for UDP,
	// rewritten tells whether the rewrite was done.
	funnel(mode Transport, rewritten bool)
}

// message reports m and moves the state. The observer is called outside
// the lock so that a slow observer does not serialise the two directions.
func (s *Session) message(dir Direction, m Message) {
	s.obs.Message(dir, m.MID)
	s.mu.Lock()
	t, ok := s.applyLocked(m)
	s.mu.Unlock()
	if ok {
		s.obs.Transition(t)
	}
	if s.hooks != nil {
		s.hooks.message(dir, m, t, ok)
	}
}

// applyLocked moves the state for message m and returns the transition to
// report, if any. Messages are recognised by MID alone: the direction bits
// of the MID already say who sent it.
func (s *Session) applyLocked(m Message) (Transition, bool) {
	switch m.MID {
	case MIDReportConnectedEX:
		s.state = StateConnected
		return TransitionConnected, true
	case MIDReportConnectedFunnel:
		s.state = StateFunnel
		return TransitionFunnelAccepted, true
	case MIDReportDisconnectedFunnel:
		s.state = StateConnected
		return TransitionFunnelRefused, true
	case MIDReportOpenFile:
		if hr, ok := m.HR(); ok && hr == 0 {
			s.state = StateOpen
			return TransitionFileOpened, true
		}
		return TransitionFileOpenFailed, true
	case MIDReportStartedPlaying:
		if hr, ok := m.HR(); ok && hr == 0 {
			s.state = StatePlaying
			return TransitionPlaying, true
		}
	case MIDReportEndOfStream:
		hr, ok := m.HR()
		stopped := s.stopPending
		s.stopPending = false
		switch {
		case !ok:
			// Too short to carry hr: counted as a message, no transition.
		case hr == hrEntryEnd:
			s.state = StateEntryEnd
			return TransitionEntryEnd, true
		case hr == 0 && stopped:
			s.state = StateOpen
			return TransitionStopped, true
		case hr == 0:
			s.state = StateEnded
			return TransitionPlaylistEnd, true
		default:
			s.state = StateEnded
			return TransitionStreamError, true
		}
	case MIDReportStreamChange:
		s.state = StateStreamChange
		return TransitionStreamChange, true
	case MIDReportRedirect:
		return TransitionRedirected, true
	case MIDStopPlaying:
		s.stopPending = true
	case MIDCloseFile:
		s.state = StateClosed
		return TransitionFileClosed, true
	}
	return 0, false
}

// funnelSeen records the client's funnel mode. rewritten tells whether a UDP
// funnel was rewritten; a failed rewrite is reported as a Problem by the
// stream, not as a transition here.
func (s *Session) funnelSeen(mode Transport, rewritten bool) {
	s.mu.Lock()
	s.funnel = mode
	s.mu.Unlock()
	switch {
	case mode == TransportTCP:
		s.obs.Transition(TransitionFunnelTCP)
	case mode == TransportUDP && rewritten:
		s.obs.Transition(TransitionFunnelUDPRewritten)
	}
	if s.hooks != nil {
		s.hooks.funnel(mode, rewritten)
	}
}
