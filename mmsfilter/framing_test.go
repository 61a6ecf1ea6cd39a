package mmsfilter

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMIDNames(t *testing.T) {
	seen := map[string]bool{}
	for k := MessageKind(0); k < NumMessageKinds; k++ {
		name := k.String()
		require.Regexp(t, `^[a-z][a-z_]*$`, name, "label-safe")
		require.False(t, seen[name], "duplicate name %s", name)
		seen[name] = true
	}
	assert.Equal(t, "connect_funnel", MIDConnectFunnel.String())
	assert.Equal(t, "report_end_of_stream", MIDReportEndOfStream.String())
	assert.Equal(t, "unknown", MID(0x00030030).String(), "Wireshark's 0x30 is not in the spec")
	assert.Equal(t, KindUnknown, MID(0xDEADBEEF).Kind())

	// Every kind but unknown has a MID: the table is complete both ways.
	mids := []MID{MIDConnect, MIDConnectFunnel, MIDOpenFile, MIDStartPlaying, MIDStopPlaying,
		MIDCloseFile, MIDReadBlock, MIDFunnelInfo, MIDSecurityResponse, MIDPong, MIDCancelReadBlock,
		MIDStartStriding, MIDLogging, MIDStreamSwitch, MIDReportConnectedEX, MIDReportConnectedFunnel,
		MIDReportDisconnectedFunnel, MIDReportStartedPlaying, MIDReportOpenFile, MIDReportStartStriding,
		MIDReportReadBlock, MIDReportFunnelInfo, MIDSecurityChallenge, MIDPing, MIDReportEndOfStream,
		MIDReportStreamChange, MIDReportStreamSwitch, MIDReportRedirect}
	kinds := map[MessageKind]bool{}
	for _, m := range mids {
		kinds[m.Kind()] = true
		dir := uint32(m) >> 16
		assert.True(t, dir == 3 || dir == 4, "%#x direction bits", uint32(m))
	}
	assert.Len(t, kinds, int(NumMessageKinds)-1)
	assert.NotContains(t, kinds, KindUnknown)

	for _, s := range []interface{ String() string }{DirClientToServer, DirServerToClient, TransportUDP, TransportTCP, TransportNone} {
		assert.Regexp(t, `^[a-z_]+$`, s.String())
	}
	for tr := Transition(0); tr < NumTransitions; tr++ {
		assert.Regexp(t, `^[a-z_]+$`, tr.String())
		assert.NotEqual(t, "unknown", tr.String())
	}
	var pass []string
	for p := Problem(0); p < NumProblems; p++ {
		assert.Regexp(t, `^[a-z_]+$`, p.String())
		assert.NotEqual(t, "unknown", p.String())
		if p.PassThrough() {
			pass = append(pass, p.String())
		}
	}
	assert.Equal(t, []string{"bad_session_id", "bad_seal", "bad_length", "data_before_command"}, pass)
	for s := State(0); s < NumStates; s++ {
		assert.NotEqual(t, "unknown", s.String())
	}
}

func TestAppendCommandLengths(t *testing.T) {
	cases := []struct {
		name     string
		msgs     []Message
		total    int
		chunkLen []uint32
	}{
		// §2.2: ReadBlock has chunkLen 7, ReportOpenFile 15 (152 bytes),
		// StreamChange 4.
		{"read block", []Message{readBlockMsg(2)}, 32 + 56, []uint32{7}},
		{"report open file", []Message{reportOpenFileMsg(0)}, 152, []uint32{15}},
		{"stream change", []Message{streamChangeMsg()}, 32 + 32, []uint32{4}},
		{"empty body", []Message{{MID: MIDPong}}, 40, []uint32{1}},
		{"two messages", []Message{pingMsg(), endOfStreamMsg(1, 4)}, 32 + 16 + 16, []uint32{2, 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := AppendCommand([]byte("x"), 7, tc.msgs...)[1:]
			require.Len(t, b, tc.total)
			p, n, err := ParsePacket(b)
			require.NoError(t, err)
			require.Equal(t, tc.total, n)
			h := p.Header
			assert.Equal(t, Header{Rep: 1, MessageLength: uint32(tc.total - 16), ChunkCount: uint32(tc.total-16) / 8, Seq: 7}, h)
			rest := p.Messages
			for i, want := range tc.msgs {
				m, n, err := ParseMessage(rest)
				require.NoError(t, err)
				assert.Equal(t, tc.chunkLen[i], m.ChunkLen)
				assert.Equal(t, want.MID, m.MID)
				assert.Equal(t, string(want.Body), string(m.Body[:len(want.Body)]))
				assert.Equal(t, make([]byte, len(m.Body)-len(want.Body)), m.Body[len(want.Body):], "zero padding")
				rest = rest[n:]
			}
			assert.Empty(t, rest)
		})
	}
}

func TestParseHeaderErrors(t *testing.T) {
	good := AppendCommand(nil, 0, pongMsg())
	with := func(off int, v uint32) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShortBuffer},
		{"prefix of a header", good[:15], ErrShortBuffer},
		{"16 of 32 bytes", good[:16], ErrShortBuffer},
		{"bad session id", with(4, 0xB00BFACF), ErrSessionID},
		{"bad session id seen early", []byte{1, 0, 0, 0, 0xCE, 0xFB}, ErrSessionID},
		{"bad seal", with(12, 0x20534D4E), ErrSeal},
		{"bad seal seen early", append(append([]byte(nil), good[:12]...), 'M', 'X'), ErrSeal},
		{"length below one message", with(8, 23), ErrLength},
		{"length above the cap", with(8, MaxCommandLen-16+1), ErrLength},
		{"length 2^32-1", with(8, 0xFFFFFFFF), ErrLength},
		{"http", []byte("GET / HTTP/1.0\r\n\r\n"), ErrSessionID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseHeader(tc.in)
			require.ErrorIs(t, err, tc.want)
		})
	}
	// The largest allowed packet frames.
	h, _, err := ParseHeader(with(8, MaxCommandLen-16))
	require.NoError(t, err)
	assert.Equal(t, MaxCommandLen, h.Len())
	_, _, err = ParsePacket(with(8, MaxCommandLen-16))
	require.ErrorIs(t, err, ErrShortBuffer)
}

func TestParseMessageErrors(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"short", []byte{1, 0, 0, 0, 2, 0, 3}, ErrShortBuffer},
		{"zero chunkLen", body{}.u32(0, uint32(MIDPong), 0, 0), ErrChunkLen},
		{"past the end", body{}.u32(3, uint32(MIDPong), 0, 0), ErrChunkLen},
		{"huge", body{}.u32(0xFFFFFFFF, uint32(MIDPong)), ErrChunkLen},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseMessage(tc.in)
			require.ErrorIs(t, err, tc.want)
		})
	}
	m, n, err := ParseMessage(body{}.u32(2, uint32(MIDReportEndOfStream), 1, 4, 99))
	require.NoError(t, err)
	assert.Equal(t, 16, n)
	hr, ok := m.HR()
	assert.True(t, ok)
	assert.Equal(t, uint32(1), hr)
	_, ok = m.BodyU32(8)
	assert.False(t, ok)
	_, ok = m.BodyU32(-1)
	assert.False(t, ok)
}

func TestDataPacket(t *testing.T) {
	p, err := AppendDataPacket(nil, DataHeader{LocationID: 5, PlayIncarnation: 4, AFFlags: 9, PacketSize: 1}, []byte("abc"))
	require.NoError(t, err)
	assert.Equal(t, []byte{5, 0, 0, 0, 4, 9, 11, 0, 'a', 'b', 'c'}, p)
	h, n, err := ParseDataHeader(p)
	require.NoError(t, err)
	assert.Equal(t, DataHeader{LocationID: 5, PlayIncarnation: 4, AFFlags: 9, PacketSize: 11}, h)
	assert.Equal(t, DataHeaderLen, n)

	_, _, err = ParseDataHeader(p[:7])
	require.ErrorIs(t, err, ErrShortBuffer)
	_, _, err = ParseDataHeader([]byte{0, 0, 0, 0, 4, 0, 7, 0})
	require.ErrorIs(t, err, ErrDataLength)

	big := make([]byte, MaxDataPayload)
	p, err = AppendDataPacket(nil, DataHeader{}, big)
	require.NoError(t, err)
	assert.Equal(t, uint16(0xFFFF), binary.LittleEndian.Uint16(p[6:]))
	p, err = AppendDataPacket([]byte("keep"), DataHeader{}, append(big, 0))
	require.ErrorIs(t, err, ErrPayloadTooLong)
	assert.Equal(t, "keep", string(p))
}

// FuzzMMSFrame: framing never panics, never reads past the packet, and an
// accepted packet is reproduced byte for byte from what was parsed.
func FuzzMMSFrame(f *testing.F) {
	for _, b := range goldenInputs(f) {
		f.Add(b)
	}
	f.Add(AppendCommand(nil, 9, pingMsg(), endOfStreamMsg(1, 4)))
	f.Add(AppendCommand(nil, 0, reportOpenFileMsg(0)))
	f.Add(serverSession(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, n, err := ParsePacket(b)
		if err != nil {
			return
		}
		require.LessOrEqual(t, n, len(b))
		require.GreaterOrEqual(t, n, HeaderLen+8)
		require.LessOrEqual(t, n, MaxCommandLen)
		require.Equal(t, n, p.Header.Len())

		out := AppendHeader(nil, p.Header)
		rest := p.Messages
		for len(rest) >= messagePrefixLen {
			m, k, err := ParseMessage(rest)
			if err != nil {
				return // a bad chunkLen: framing stands, the walk stops
			}
			require.Equal(t, int(m.ChunkLen)*8, k)
			out = AppendMessage(out, m)
			rest = rest[k:]
		}
		out = append(out, rest...)
		require.Equal(t, b[:n], out, "append(parse(x)) == x")
	})
}
