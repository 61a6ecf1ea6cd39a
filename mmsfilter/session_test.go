package mmsfilter

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	c2s = DirClientToServer
	s2c = DirServerToClient
)

// step is one message into the session, or a funnel outcome when funnel is
// set, and what must follow.
type step struct {
	dir        Direction
	m          Message
	funnel     Transport
	rewritten  bool
	transition string // "" for none
	state      State
	between    bool
}

func runSteps(t *testing.T, steps []step) {
	t.Helper()
	rec := &recorder{}
	s := NewSession(rec)
	require.Equal(t, StateIdle, s.State())
	for i, st := range steps {
		before := len(rec.filtered("transition"))
		if st.funnel != TransportNone {
			s.funnelSeen(st.funnel, st.rewritten)
		} else {
			s.message(st.dir, st.m)
		}
		got := rec.filtered("transition")[before:]
		if st.transition == "" {
			require.Empty(t, got, "step %d (%s): no transition", i, st.m.MID)
		} else {
			require.Equal(t, []string{"transition " + st.transition}, got, "step %d (%s)", i, st.m.MID)
		}
		require.Equal(t, st.state, s.State(), "step %d (%s): state", i, st.m.MID)
		require.Equal(t, st.between, s.BetweenEntries(), "step %d (%s): between entries", i, st.m.MID)
	}
}

// TestSessionPlaylist follows PROTOCOL.md §4.a and §4.b: a UDP session
// over a two-entry server-side playlist.
func TestSessionPlaylist(t *testing.T) {
	runSteps(t, []step{
		{dir: c2s, m: connectMsg(), state: StateIdle},
		{dir: s2c, m: connectedEXMsg(), transition: "connected", state: StateConnected},
		{dir: c2s, m: msg(MIDConnectFunnel, funnelBody(vlcFunnelName, vlcTrailer)), state: StateConnected},
		{funnel: TransportUDP, rewritten: true, transition: "funnel_udp_rewritten", state: StateConnected},
		{dir: s2c, m: connectedFunnelMsg(), transition: "funnel_accepted", state: StateFunnel},
		{dir: c2s, m: openFileMsg("playlist.wsx"), state: StateFunnel},
		{dir: s2c, m: reportOpenFileMsg(0), transition: "file_opened", state: StateOpen},
		{dir: c2s, m: readBlockMsg(2), state: StateOpen},
		{dir: s2c, m: reportReadBlockMsg(2), state: StateOpen},
		{dir: c2s, m: streamSwitchMsg(), state: StateOpen},
		{dir: s2c, m: reportStreamSwitchMsg(), state: StateOpen},
		{dir: c2s, m: startPlayingMsg(9), state: StateOpen},
		{dir: s2c, m: startedPlayingMsg(9), transition: "playing", state: StatePlaying},
		{dir: s2c, m: pingMsg(), state: StatePlaying},
		{dir: c2s, m: pongMsg(), state: StatePlaying},
		// §4.b 2–4: end of entry 1, Logging, StreamChange.
		{dir: s2c, m: endOfStreamMsg(1, 9), transition: "entry_end", state: StateEntryEnd, between: true},
		{dir: c2s, m: loggingMsg(), state: StateEntryEnd, between: true},
		{dir: s2c, m: streamChangeMsg(), transition: "stream_change", state: StateStreamChange, between: true},
		// §4.b 6–8: header again (with a retry), StreamSwitch, StartPlaying.
		{dir: c2s, m: readBlockMsg(3), state: StateStreamChange, between: true},
		{dir: c2s, m: cancelReadBlockMsg(3), state: StateStreamChange, between: true},
		{dir: c2s, m: readBlockMsg(4), state: StateStreamChange, between: true},
		{dir: s2c, m: reportReadBlockMsg(4), state: StateStreamChange, between: true},
		{dir: c2s, m: streamSwitchMsg(), state: StateStreamChange, between: true},
		{dir: s2c, m: reportStreamSwitchMsg(), state: StateStreamChange, between: true},
		{dir: c2s, m: startPlayingMsg(10), state: StateStreamChange, between: true},
		{dir: s2c, m: startedPlayingMsg(10), transition: "playing", state: StatePlaying},
		// §4.b 9 and §4.a 8: end of the playlist, Logging, CloseFile.
		{dir: s2c, m: endOfStreamMsg(0, 10), transition: "playlist_end", state: StateEnded},
		{dir: c2s, m: loggingMsg(), state: StateEnded},
		{dir: c2s, m: closeFileMsg(), transition: "file_closed", state: StateClosed},
	})
}

func TestSessionStopSeekAndErrors(t *testing.T) {
	runSteps(t, []step{
		{dir: s2c, m: connectedEXMsg(), transition: "connected", state: StateConnected},
		// §4.c: UDP refused, the client retries with TCP on the same connection.
		{funnel: TransportUDP, rewritten: true, transition: "funnel_udp_rewritten", state: StateConnected},
		{dir: s2c, m: disconnectedFunnelMsg(), transition: "funnel_refused", state: StateConnected},
		{funnel: TransportTCP, transition: "funnel_tcp", state: StateConnected},
		{dir: s2c, m: connectedFunnelMsg(), transition: "funnel_accepted", state: StateFunnel},
		{dir: s2c, m: reportOpenFileMsg(0x80070005), transition: "file_open_failed", state: StateFunnel},
		{dir: s2c, m: reportOpenFileMsg(0), transition: "file_opened", state: StateOpen},
		{dir: s2c, m: startedPlayingMsg(4), transition: "playing", state: StatePlaying},
		// §4.a 9: a seek is Stop, EndOfStream hr 0, StartPlaying.
		{dir: c2s, m: stopPlayingMsg(), state: StatePlaying},
		{dir: s2c, m: endOfStreamMsg(0, 4), transition: "stopped", state: StateOpen},
		{dir: s2c, m: msg(MIDReportStartedPlaying, body{}.u32(0x80004005)), state: StateOpen},
		{dir: s2c, m: startedPlayingMsg(5), transition: "playing", state: StatePlaying},
		// Pre-v9 servers end every entry with hr 0 (§2.2 EndOfStream): a
		// StreamChange after it still means "between entries".
		{dir: s2c, m: endOfStreamMsg(0, 5), transition: "playlist_end", state: StateEnded},
		{dir: s2c, m: streamChangeMsg(), transition: "stream_change", state: StateStreamChange, between: true},
		{dir: s2c, m: startedPlayingMsg(6), transition: "playing", state: StatePlaying},
		{dir: s2c, m: msg(MIDReportEndOfStream, nil), state: StatePlaying},
		{dir: s2c, m: endOfStreamMsg(0xC00D0000, 6), transition: "stream_error", state: StateEnded},
		{dir: s2c, m: msg(MIDReportRedirect, body{}.u32(0)), transition: "redirected", state: StateEnded},
		{dir: s2c, m: msg(MID(0x0004FFFF), nil), state: StateEnded},
	})
}

func TestSessionFunnelMode(t *testing.T) {
	s := NewSession(nil)
	assert.Equal(t, TransportNone, s.FunnelMode())
	s.funnelSeen(TransportUDP, false)
	assert.Equal(t, TransportUDP, s.FunnelMode(), "recorded even when the rewrite failed")
	s.funnelSeen(TransportTCP, false)
	assert.Equal(t, TransportTCP, s.FunnelMode())
}
