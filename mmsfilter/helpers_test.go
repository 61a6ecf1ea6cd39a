package mmsfilter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// body builds a message body field by field, little-endian.
type body []byte

func (b body) u32(v ...uint32) body {
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

func (b body) u16(v ...uint16) body {
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, x)
	}
	return b
}

func (b body) f64(v float64) body { return binary.LittleEndian.AppendUint64(b, math.Float64bits(v)) }

func (b body) raw(p ...byte) body { return append(b, p...) }

func (b body) zeros(n int) body { return append(b, make([]byte, n)...) }

// utf16z appends s as UTF-16LE followed by a NUL unit.
func (b body) utf16z(s string) body { return append(appendUTF16(b, s), 0, 0) }

func msg(mid MID, b body) Message { return Message{MID: mid, Body: b} }

// Client messages, with field values of VLC/libmms (PROTOCOL.md §2.2, §5).

func connectMsg() Message {
	return msg(MIDConnect, body{}.u32(0xF0F0F0EF, 0x0004000B, 0x0003001C).
		utf16z("NSPlayer/7.0.0.1956; {3300AD50-2C39-46c0-AE0A-AB1B2F3D4D56}; Host: media.example"))
}

// funnelBody is the ConnectFunnel body (from offset 40) with VLC's values
// and the given funnel name bytes and trailer.
func funnelBody(name string, trailer []byte) body {
	return body{}.u32(0, 0xFFFFFFFF, 0, 0x000A0000, 2).raw(appendUTF16(nil, name)...).raw(trailer...)
}

// vlcTrailer is what VLC puts after the funnel name: NUL, then a '0' unit.
var vlcTrailer = []byte{0, 0, '0', 0}

func openFileMsg(name string) Message {
	return msg(MIDOpenFile, body{}.u32(1, 0xFFFFFFFF, 0, 0).utf16z(name))
}

func readBlockMsg(inc uint32) Message {
	return msg(MIDReadBlock, body{}.u32(1, 0, 0, 0x8000, 0xFFFFFFFF, 0).f64(0).f64(3600).u32(inc, 0))
}

func cancelReadBlockMsg(inc uint32) Message { return msg(MIDCancelReadBlock, body{}.u32(inc)) }

func streamSwitchMsg() Message {
	return msg(MIDStreamSwitch, body{}.u32(2).u16(0xFFFF, 1, 0, 0xFFFF, 2, 0))
}

func startPlayingMsg(inc uint32) Message {
	return msg(MIDStartPlaying, body{}.u32(1, 0x0001FFFF).f64(0).u32(0xFFFFFFFF, 0xFFFFFFFF, 0x00FFFFFF, inc))
}

func stopPlayingMsg() Message { return msg(MIDStopPlaying, body{}.u32(1, 0x001FFFFF)) }

func loggingMsg() Message {
	// 1490-byte CLIENT_LOG: cbSize first, dwIPAddress 0xFFFFFFFF at 1150.
	b := body{}.u32(1490).zeros(1146).u32(1).u32(0xFFFFFFFF).zeros(1490 - 1158)
	return msg(MIDLogging, b)
}

func pongMsg() Message      { return msg(MIDPong, body{}.u32(0, 0)) }
func closeFileMsg() Message { return msg(MIDCloseFile, body{}.u32(1, 1)) }

// Server messages.

func connectedEXMsg() Message {
	return msg(MIDReportConnectedEX, body{}.u32(0, 0xF0F0F0EF, 0x0004000B, 0x0003001C).f64(1).
		u32(1, 1, 0x8000, 0x00989680, 13, 0, 0, 0).utf16z("9.01.01.3841"))
}

func connectedFunnelMsg() Message {
	return msg(MIDReportConnectedFunnel, body{}.u32(0, 0, 0).utf16z("Funnel Of The Gods"))
}

func disconnectedFunnelMsg() Message {
	return msg(MIDReportDisconnectedFunnel, body{}.u32(0x80070057, 0))
}

func reportOpenFileMsg(hr uint32) Message {
	// 116-byte message: 108 bytes of body (§2.2 ReportOpenFile).
	b := body{}.u32(hr, 1, 1, 0, 0, 0x02000000|0x40000000).f64(120).u32(120).zeros(16).
		u32(1600).raw(binary.LittleEndian.AppendUint64(nil, 0)...).u32(128000, 5000).zeros(36)
	return msg(MIDReportOpenFile, b)
}

func reportReadBlockMsg(inc uint32) Message {
	return msg(MIDReportReadBlock, body{}.u32(0, inc, 0))
}

func reportStreamSwitchMsg() Message { return msg(MIDReportStreamSwitch, body{}.u32(0)) }

func startedPlayingMsg(inc uint32) Message {
	return msg(MIDReportStartedPlaying, body{}.u32(0, inc, 1, 0).zeros(12))
}

func endOfStreamMsg(hr, inc uint32) Message { return msg(MIDReportEndOfStream, body{}.u32(hr, inc)) }

func streamChangeMsg() Message {
	return msg(MIDReportStreamChange, body{}.u32(0, 0xFF, 1600, 5000, 128000, 0))
}

func pingMsg() Message { return msg(MIDPing, body{}.u32(0, 0)) }

// dataPacket builds a Data packet with a recognisable payload.
func dataPacket(t testing.TB, loc uint32, inc, flags uint8, n int) []byte {
	t.Helper()
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = byte(int(loc)*7 + i)
	}
	p, err := AppendDataPacket(nil, DataHeader{LocationID: loc, PlayIncarnation: inc, AFFlags: flags}, payload)
	require.NoError(t, err)
	return p
}

// seqWriter numbers packets per direction as the spec requires.
type seqWriter struct {
	buf []byte
	seq uint16
}

func (w *seqWriter) cmd(msgs ...Message) *seqWriter {
	w.buf = AppendCommand(w.buf, w.seq, msgs...)
	w.seq++
	return w
}

func (w *seqWriter) data(p []byte) *seqWriter {
	w.buf = append(w.buf, p...)
	return w
}

const vlcFunnelName = `\\192.168.1.10\UDP\7000`

// testReplacement is what the test FunnelFunc answers.
var testReplacement = netip.MustParseAddrPort("203.0.113.7:40000")

// clientSession is a whole client side of a two-entry server-side playlist
// over MMSU (§4.a, §4.b), with the funnel packet's offset and length.
func clientSession(t testing.TB) (stream []byte, funnelOff, funnelLen int) {
	t.Helper()
	w := &seqWriter{}
	w.cmd(connectMsg())
	funnelOff = len(w.buf)
	w.cmd(msg(MIDConnectFunnel, funnelBody(vlcFunnelName, vlcTrailer)))
	funnelLen = len(w.buf) - funnelOff
	w.cmd(openFileMsg("playlist.wsx")).cmd(readBlockMsg(2)).cmd(streamSwitchMsg()).cmd(startPlayingMsg(4)).
		cmd(pongMsg()).cmd(loggingMsg()).
		cmd(readBlockMsg(3)).cmd(cancelReadBlockMsg(3)).cmd(readBlockMsg(4)).cmd(streamSwitchMsg()).cmd(startPlayingMsg(9)).
		cmd(loggingMsg()).cmd(closeFileMsg())
	return w.buf, funnelOff, funnelLen
}

// serverSession is the matching server side, Data packets interleaved.
func serverSession(t testing.TB) []byte {
	t.Helper()
	w := &seqWriter{}
	w.cmd(connectedEXMsg()).cmd(connectedFunnelMsg()).cmd(reportOpenFileMsg(0)).cmd(reportReadBlockMsg(2))
	w.data(dataPacket(t, 0, 2, 0x04, 300)).data(dataPacket(t, 1, 2, 0x0C, 120))
	w.cmd(reportStreamSwitchMsg()).cmd(startedPlayingMsg(4))
	for i := range 4 {
		w.data(dataPacket(t, uint32(i), 4, uint8(i), 257))
	}
	w.cmd(pingMsg())
	w.data(dataPacket(t, 4, 4, 4, 64))
	// Entry 1 ends; StreamChange; the client re-reads the header (§4.b).
	w.cmd(endOfStreamMsg(1, 4)).cmd(streamChangeMsg()).cmd(reportReadBlockMsg(4))
	w.data(dataPacket(t, 0, 4, 0x0C, 200))
	w.cmd(reportStreamSwitchMsg()).cmd(startedPlayingMsg(9))
	for i := range 3 {
		w.data(dataPacket(t, uint32(i), 9, uint8(5+i), 199))
	}
	// Two messages in one header: a server may pack them (§1.2).
	w.cmd(pingMsg(), endOfStreamMsg(0, 9))
	return w.buf
}

// recorder is an Observer that keeps every event as a line.
type recorder struct {
	mu     sync.Mutex
	events []string
	errs   []error
}

var _ Observer = (*recorder)(nil)

func (r *recorder) Message(dir Direction, mid MID) {
	r.add(fmt.Sprintf("message %s %s", dir, mid))
}

func (r *recorder) Transition(t Transition) { r.add("transition " + t.String()) }

func (r *recorder) Problem(dir Direction, p Problem, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("problem %s %s", dir, p))
	r.errs = append(r.errs, err)
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, s)
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// filtered returns the events that start with prefix.
func (r *recorder) filtered(prefix string) []string {
	var out []string
	for _, e := range r.list() {
		if strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	return out
}

func fixedFunnel(to netip.AddrPort) FunnelFunc {
	return func(context.Context, Funnel, func(netip.AddrPort) bool) (netip.AddrPort, error) { return to, nil }
}

// chunkReader returns its data in reads of the given sizes, cycling.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		n = min(n, max(1, c.sizes[c.i%len(c.sizes)]))
		c.i++
	}
	n = copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// splitReader returns data in two reads, split at k.
func splitReader(data []byte, k int) io.Reader {
	return &chunkReader{data: data, sizes: []int{k, len(data)}}
}

// run pushes in through one direction of a fresh Streams and returns the
// output and the recorded events.
func run(t testing.TB, dir Direction, src io.Reader, onFunnel FunnelFunc) ([]byte, *recorder, error) {
	t.Helper()
	rec := &recorder{}
	s := NewStreams(onFunnel, rec)
	var out bytes.Buffer
	var err error
	if dir == DirClientToServer {
		err = s.ClientToServer(context.Background(), &out, src)
	} else {
		err = s.ServerToClient(context.Background(), &out, src)
	}
	return out.Bytes(), rec, err
}

// Golden files are hex dumps: '#' comment lines, then lines of
// "oooo: xx xx …" with 16 bytes each, so a diff shows the offset of a change.

func encodeGolden(comment string, b []byte) []byte {
	var buf bytes.Buffer
	for _, line := range strings.Split(comment, "\n") {
		fmt.Fprintf(&buf, "# %s\n", line)
	}
	for off := 0; off < len(b); off += 16 {
		row := b[off:min(off+16, len(b))]
		fmt.Fprintf(&buf, "%04x:", off)
		for _, c := range row {
			fmt.Fprintf(&buf, " %02x", c)
		}
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

func decodeGolden(data []byte) ([]byte, error) {
	var out []byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		_, hexPart, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("golden line without offset: %q", line)
		}
		b, err := hex.DecodeString(strings.ReplaceAll(hexPart, " ", ""))
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, sc.Err()
}

// golden compares got with testdata/golden/name, or rewrites the file with
// -update.
func golden(t *testing.T, name, comment string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, encodeGolden(comment, got), 0o644))
	}
	data, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file; run go test -run %s -update", t.Name())
	want, err := decodeGolden(data)
	require.NoError(t, err)
	require.Equal(t, hex.Dump(want), hex.Dump(got), "golden %s differs", name)
}

// goldenInputs returns the decoded .in.hex golden files, for fuzz seeds.
func goldenInputs(t testing.TB) [][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "golden", "*.hex"))
	require.NoError(t, err)
	var out [][]byte
	for _, p := range paths {
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		b, err := decodeGolden(data)
		require.NoError(t, err)
		out = append(out, b)
	}
	return out
}
