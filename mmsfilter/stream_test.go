package mmsfilter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// wantClientOutput is the client session with its funnel packet rewritten
// by RewriteFunnel (itself pinned by the golden tests).
func wantClientOutput(t testing.TB, in []byte, off, n int) []byte {
	t.Helper()
	rew, _, err := RewriteFunnel(nil, in[off:off+n], testReplacement)
	require.NoError(t, err)
	return slices.Concat(in[:off], rew, in[off+n:])
}

func TestStreamWholeSession(t *testing.T) {
	in, off, n := clientSession(t)
	var calls []Funnel
	out, rec, err := run(t, c2s, bytes.NewReader(in), func(_ context.Context, f Funnel, _ func(netip.AddrPort) bool) (netip.AddrPort, error) {
		calls = append(calls, f)
		return testReplacement, nil
	})
	require.NoError(t, err)
	require.Equal(t, wantClientOutput(t, in, off, n), out)
	require.Equal(t, []Funnel{{netip.MustParseAddr("192.168.1.10"), TransportUDP, 7000}}, calls)
	assert.Equal(t, []string{"transition funnel_udp_rewritten", "transition file_closed"}, rec.filtered("transition"))
	assert.Empty(t, rec.filtered("problem"))
	assert.Len(t, rec.filtered("message client_to_server"), 15)
	assert.Equal(t, "message client_to_server connect_funnel", rec.list()[1])

	sin := serverSession(t)
	out, rec, err = run(t, s2c, bytes.NewReader(sin), nil)
	require.NoError(t, err)
	require.Equal(t, sin, out)
	assert.Equal(t, []string{
		"transition connected", "transition funnel_accepted", "transition file_opened", "transition playing",
		"transition entry_end", "transition stream_change", "transition playing", "transition playlist_end",
	}, rec.filtered("transition"))
	assert.Empty(t, rec.filtered("problem"))
	assert.Len(t, rec.filtered("message server_to_client"), 14)
}

// TestStreamSplitEveryBoundary: the output and every event are the same
// whether the stream comes whole, split in two at any byte, one byte at a
// time, or in random pieces.
func TestStreamSplitEveryBoundary(t *testing.T) {
	cin, off, n := clientSession(t)
	cases := []struct {
		name string
		dir  Direction
		in   []byte
		want []byte
	}{
		{"client", c2s, cin, wantClientOutput(t, cin, off, n)},
		{"server", s2c, serverSession(t), serverSession(t)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := fixedFunnel(testReplacement)
			out, rec, err := run(t, tc.dir, bytes.NewReader(tc.in), f)
			require.NoError(t, err)
			require.Equal(t, tc.want, out)
			events := rec.list()

			check := func(what string, r io.Reader) {
				t.Helper()
				out, rec, err := run(t, tc.dir, r, f)
				require.NoError(t, err, what)
				if !bytes.Equal(tc.want, out) {
					require.Equal(t, tc.want, out, what)
				}
				if got := rec.list(); !slices.Equal(events, got) {
					require.Equal(t, events, got, what)
				}
			}
			for k := 1; k < len(tc.in); k++ {
				check("split at "+strconv.Itoa(k), splitReader(tc.in, k))
			}
			check("one byte at a time", iotest.OneByteReader(bytes.NewReader(tc.in)))
			check("EOF with the last data", iotest.DataErrReader(bytes.NewReader(tc.in)))
			check("half reads", iotest.HalfReader(bytes.NewReader(tc.in)))
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range 200 {
				sizes := make([]int, 1+rng.IntN(16))
				for j := range sizes {
					sizes[j] = 1 + rng.IntN(100)
				}
				check("random pieces "+strconv.Itoa(i), &chunkReader{data: tc.in, sizes: sizes})
			}
		})
	}
}

// header builds a raw TcpMessageHeader with chosen length fields.
func rawHeader(ml uint32, seal uint32) []byte {
	b := []byte{1, 0, 0, 0}
	b = binary.LittleEndian.AppendUint32(b, SessionID)
	b = binary.LittleEndian.AppendUint32(b, ml)
	b = binary.LittleEndian.AppendUint32(b, seal)
	b = binary.LittleEndian.AppendUint32(b, ml/8)
	return append(b, make([]byte, 12)...)
}

// TestStreamPassThrough: what is not MMS passes byte for byte, counted once.
func TestStreamPassThrough(t *testing.T) {
	connect := AppendCommand(nil, 0, connectMsg())
	pong := AppendCommand(nil, 1, pongMsg())
	exPkt := AppendCommand(nil, 0, connectedEXMsg())
	garbage := bytes.Repeat([]byte("not mms at all \x00\xff"), 70000)
	badChunk := AppendCommand(nil, 1, pongMsg())
	binary.LittleEndian.PutUint32(badChunk[32:], 0)
	badFunnelChunk := AppendCommand(nil, 1, msg(MIDConnectFunnel, funnelBody(vlcFunnelName, vlcTrailer)))
	binary.LittleEndian.PutUint32(badFunnelChunk[32:], 11)
	data := dataPacket(t, 0, 4, 0, 100)

	cases := []struct {
		name     string
		dir      Direction
		in       []byte
		problems []string
		err      error
		messages int
	}{
		{"client http", c2s, []byte("GET /stream HTTP/1.1\r\nHost: media.example\r\n\r\n"),
			[]string{"bad_session_id"}, ErrSessionID, 0},
		{"client garbage after connect", c2s, slices.Concat(connect, []byte("\x01\x00\x00\x00\xce\xfa\x0b\xb1"), pong, garbage),
			[]string{"bad_session_id"}, ErrSessionID, 1},
		{"client bad seal", c2s, slices.Concat(connect, rawHeader(24, 0x20534D4E), pong),
			[]string{"bad_seal"}, ErrSeal, 1},
		{"client length over the cap", c2s, slices.Concat(rawHeader(MaxCommandLen-16+8, Seal), garbage),
			[]string{"bad_length"}, ErrLength, 0},
		{"client length under one message", c2s, slices.Concat(rawHeader(8, Seal), pong),
			[]string{"bad_length"}, ErrLength, 0},
		{"client truncated command", c2s, slices.Concat(connect, pong[:30]),
			[]string{"truncated"}, io.ErrUnexpectedEOF, 1},
		{"client truncated header", c2s, slices.Concat(connect, pong[:5]),
			[]string{"truncated"}, io.ErrUnexpectedEOF, 1},
		{"client bad chunkLen", c2s, slices.Concat(connect, badChunk, pong),
			[]string{"bad_chunk_len"}, ErrChunkLen, 2},
		{"client bad chunkLen in a funnel", c2s, slices.Concat(connect, badFunnelChunk, pong),
			[]string{"bad_chunk_len"}, ErrChunkLen, 2},
		{"server text", s2c, []byte("220 media.example ESMTP ready\r\n"),
			[]string{"data_before_command"}, errDataFirst, 0},
		{"server data first", s2c, slices.Concat(data, exPkt),
			[]string{"data_before_command"}, errDataFirst, 0},
		{"server data too short", s2c, slices.Concat(exPkt, []byte{0, 0, 0, 0, 4, 0, 7, 0}, data),
			[]string{"bad_length"}, ErrDataLength, 1},
		{"server bad seal", s2c, slices.Concat(exPkt, rawHeader(24, 0), data),
			[]string{"bad_seal"}, ErrSeal, 1},
		{"server truncated data", s2c, slices.Concat(exPkt, data[:50]),
			[]string{"truncated"}, io.ErrUnexpectedEOF, 1},
		{"server truncated command", s2c, slices.Concat(exPkt, exPkt[:40]),
			[]string{"truncated"}, io.ErrUnexpectedEOF, 1},
		{"server garbage after commands", s2c, slices.Concat(exPkt, []byte{0, 0, 0, 0, 0, 0, 1, 0}, garbage),
			[]string{"bad_length"}, ErrDataLength, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			called := 0
			f := func(context.Context, Funnel, func(netip.AddrPort) bool) (netip.AddrPort, error) {
				called++
				return testReplacement, nil
			}
			for _, r := range []io.Reader{bytes.NewReader(tc.in), iotest.OneByteReader(bytes.NewReader(tc.in))} {
				out, rec, err := run(t, tc.dir, r, f)
				require.NoError(t, err)
				require.True(t, bytes.Equal(tc.in, out), "bytes differ")
				var problems []string
				for _, p := range rec.filtered("problem") {
					problems = append(problems, p[strings.LastIndex(p, " ")+1:])
				}
				require.Equal(t, tc.problems, problems)
				if tc.err != nil {
					require.ErrorIs(t, rec.errs[0], tc.err)
				}
				require.Len(t, rec.filtered("message"), tc.messages)
				require.Zero(t, called, "no funnel may be rewritten")
			}
		})
	}
}

// TestStreamFuzzCrashers pins what the fuzzers found, by name.
func TestStreamFuzzCrashers(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
	}{
		// FuzzStream/0d51e18d32a6771a: the empty stream. (The filter was
		// right; the fuzz target compared nil with []byte{}.)
		{"empty stream", []byte{}},
		{"nil stream", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, dir := range []Direction{c2s, s2c} {
				out, rec, err := run(t, dir, bytes.NewReader(tc.in), fixedFunnel(testReplacement))
				require.NoError(t, err)
				require.Empty(t, out)
				require.Empty(t, rec.list())
			}
		})
	}
}

// TestStreamNothingHeldBack: a short non-MMS greeting and a Data packet
// that is still arriving are forwarded without waiting for more bytes.
func TestStreamNothingHeldBack(t *testing.T) {
	ex := AppendCommand(nil, 0, connectedEXMsg())
	data := dataPacket(t, 0, 4, 0, 1000)
	cases := []struct {
		name  string
		dir   Direction
		first []byte // must come out before the rest is written
		rest  []byte
	}{
		{"server greeting", s2c, []byte("220 ok"), []byte(" more\r\n")},
		{"client greeting", c2s, []byte("HELO x"), []byte("\r\n")},
		{"data packet in flight", s2c, slices.Concat(ex, data[:300]), data[300:]},
		{"raw after pass-through", c2s, []byte("GET /"), []byte(" HTTP/1.0\r\n\r\n")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srcR, srcW := io.Pipe()
			dstR, dstW := io.Pipe()
			s := NewStreams(nil, nil)
			done := make(chan error, 1)
			go func() {
				var err error
				if tc.dir == c2s {
					err = s.ClientToServer(context.Background(), dstW, srcR)
				} else {
					err = s.ServerToClient(context.Background(), dstW, srcR)
				}
				dstW.CloseWithError(err)
				done <- err
			}()
			go func() {
				_, _ = srcW.Write(tc.first)
			}()
			got := make([]byte, len(tc.first))
			readDone := make(chan error, 1)
			go func() { _, err := io.ReadFull(dstR, got); readDone <- err }()
			select {
			case err := <-readDone:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("bytes held back: the filter waited for more input")
			}
			require.Equal(t, tc.first, got)
			go func() {
				_, _ = srcW.Write(tc.rest)
				_ = srcW.Close()
			}()
			rest, err := io.ReadAll(dstR)
			require.NoError(t, err)
			require.Equal(t, tc.rest, rest)
			require.NoError(t, <-done)
		})
	}
}

func funnelSession(t testing.TB, names ...[]byte) []byte {
	t.Helper()
	w := &seqWriter{}
	w.cmd(connectMsg())
	for _, n := range names {
		w.cmd(msg(MIDConnectFunnel, body{}.u32(0, 0xFFFFFFFF, 0, 0x00989680, 2).raw(n...)))
	}
	w.cmd(openFileMsg("a.asf"))
	return w.buf
}

func TestStreamMalformedFunnel(t *testing.T) {
	cases := []struct {
		name string
		tail []byte
		err  error
	}{
		{"port out of range", append(utf16(`\\192.168.1.10\UDP\70000`), 0, 0), ErrFunnelPort},
		{"host name", append(utf16(`\\media.example\UDP\7000`), 0, 0), ErrFunnelAddr},
		{"non-ascii", append(utf16(`\\192.168.1.10\UDP\7000`), 0x31, 0x01, 0, 0), ErrFunnelSyntax},
		{"empty name", nil, ErrFunnelSyntax},
		{"no transport", append(utf16(`\\192.168.1.10\7000`), 0, 0), ErrFunnelSyntax},
		{"too long", utf16(`\\` + strings.Repeat("1", 200)), ErrFunnelTooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := funnelSession(t, tc.tail)
			called := 0
			out, rec, err := run(t, c2s, bytes.NewReader(in), func(context.Context, Funnel, func(netip.AddrPort) bool) (netip.AddrPort, error) {
				called++
				return testReplacement, nil
			})
			require.NoError(t, err)
			require.Equal(t, in, out, "unchanged")
			require.Zero(t, called)
			require.Equal(t, []string{"problem client_to_server funnel_malformed"}, rec.filtered("problem"))
			require.ErrorIs(t, rec.errs[0], tc.err)
			require.Empty(t, rec.filtered("transition"))
		})
	}
	// A ConnectFunnel too short to reach offset 60.
	in := slices.Concat(AppendCommand(nil, 0, connectMsg()), AppendCommand(nil, 1, msg(MIDConnectFunnel, body{}.u32(0, 1))))
	out, rec, err := run(t, c2s, bytes.NewReader(in), fixedFunnel(testReplacement))
	require.NoError(t, err)
	require.Equal(t, in, out)
	require.ErrorIs(t, rec.errs[0], ErrFunnelSyntax)
}

func TestStreamFunnelOutcomes(t *testing.T) {
	errLease := errors.New("lease limit")
	udp := append(utf16(vlcFunnelName), vlcTrailer...)
	tcp := append(utf16(`\\192.168.0.1\TCP\1242`), 0, 0)
	other := append(utf16(`\\10.0.0.9\udp\5000`), 0, 0)
	cases := []struct {
		name        string
		in          []byte
		fn          FunnelFunc
		rewrites    int // UDP funnels expected rewritten
		transitions []string
		problems    []string
		err         error
	}{
		{"udp rewritten", funnelSession(t, udp), fixedFunnel(testReplacement), 1,
			[]string{"funnel_udp_rewritten"}, nil, nil},
		{"callback error", funnelSession(t, udp), func(context.Context, Funnel, func(netip.AddrPort) bool) (netip.AddrPort, error) {
			return netip.AddrPort{}, errLease
		}, 0, nil, []string{"funnel_rewrite_failed"}, errLease},
		{"port 0", funnelSession(t, udp), fixedFunnel(netip.AddrPortFrom(testReplacement.Addr(), 0)), 0,
			nil, []string{"funnel_rewrite_failed"}, ErrReplacement},
		{"no callback", funnelSession(t, udp), nil, 0, nil, []string{"funnel_rewrite_failed"}, ErrNoRewriter},
		// VLC's mmst:// sends a fixed fake TCP funnel (§2.2).
		{"tcp passes", funnelSession(t, tcp), fixedFunnel(testReplacement), 0, []string{"funnel_tcp"}, nil, nil},
		// §4.b 6: a new ConnectFunnel is rewritten again.
		{"second funnel", funnelSession(t, udp, other), fixedFunnel(testReplacement), 2,
			[]string{"funnel_udp_rewritten", "funnel_udp_rewritten"}, nil, nil},
		// §4.c: refused UDP, then TCP on the same connection.
		{"udp then tcp", funnelSession(t, udp, tcp), fixedFunnel(testReplacement), 1,
			[]string{"funnel_udp_rewritten", "funnel_tcp"}, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, rec, err := run(t, c2s, bytes.NewReader(tc.in), tc.fn)
			require.NoError(t, err)
			var tr, pr []string
			for _, e := range rec.filtered("transition") {
				tr = append(tr, strings.TrimPrefix(e, "transition "))
			}
			for _, e := range rec.filtered("problem") {
				pr = append(pr, strings.TrimPrefix(e, "problem client_to_server "))
			}
			require.Equal(t, tc.transitions, tr)
			require.Equal(t, tc.problems, pr)
			if tc.err != nil {
				require.ErrorIs(t, rec.errs[0], tc.err)
			}
			// Compare packet by packet with RewriteFunnel's result.
			rewrites := 0
			for rin, rout := tc.in, out; len(rin) > 0; {
				_, nin, err := ParsePacket(rin)
				require.NoError(t, err)
				_, nout, err := ParsePacket(rout)
				require.NoError(t, err)
				want, f, err := RewriteFunnel(nil, rin[:nin], testReplacement)
				if err == nil && f.Transport == TransportUDP && tc.rewrites > 0 {
					rewrites++
					require.Equal(t, want, rout[:nout])
					checkRewrite(t, rin[:nin], rout[:nout], testReplacement)
				} else {
					require.Equal(t, rin[:nin], rout[:nout])
				}
				rin, rout = rin[nin:], rout[nout:]
			}
			require.Equal(t, tc.rewrites, rewrites)
		})
	}
}

func TestStreamFunnelAmongOtherMessages(t *testing.T) {
	// A client MUST send one message per header; a packed one is handled
	// all the same, the other messages untouched.
	pkt := AppendCommand(nil, 5, connectMsg(), msg(MIDConnectFunnel, funnelBody(vlcFunnelName, vlcTrailer)), pongMsg())
	to := netip.MustParseAddrPort("[2001:db8:ffff::1234:5678]:65000")
	out, rec, err := run(t, c2s, bytes.NewReader(pkt), fixedFunnel(to))
	require.NoError(t, err)
	checkRewrite(t, pkt, out, to)
	assert.Greater(t, len(out), len(pkt))
	assert.Equal(t, []string{"message client_to_server connect", "message client_to_server connect_funnel",
		"message client_to_server pong", "transition funnel_udp_rewritten"}, rec.list())
}

func TestStreamRewriteWouldExceedCap(t *testing.T) {
	// A funnel in a packet already at MaxCommandLen cannot grow: unchanged.
	funnel := msg(MIDConnectFunnel, funnelBody(`\\1.2.3.4\UDP\7`, []byte{0, 0}))
	fillerBody := MaxCommandLen - HeaderLen - len(AppendMessage(nil, funnel)) - messagePrefixLen
	pkt := AppendCommand(nil, 1, funnel, msg(MIDLogging, make(body, fillerBody)))
	require.Len(t, pkt, MaxCommandLen)
	out, rec, err := run(t, c2s, bytes.NewReader(pkt), fixedFunnel(netip.MustParseAddrPort("[2001:db8::1:2:3:4]:65535")))
	require.NoError(t, err)
	require.Equal(t, pkt, out)
	require.Equal(t, []string{"problem client_to_server funnel_rewrite_failed"}, rec.filtered("problem"))
	require.ErrorIs(t, rec.errs[0], ErrRewriteTooLong)

	// A shorter replacement still fits.
	out, rec, err = run(t, c2s, bytes.NewReader(pkt), fixedFunnel(netip.MustParseAddrPort("9.9.9.9:9")))
	require.NoError(t, err)
	require.Empty(t, rec.filtered("problem"))
	checkRewrite(t, pkt, out, netip.MustParseAddrPort("9.9.9.9:9"))
}

type failWriter struct {
	n    int // bytes accepted before failing
	err  error
	got  bytes.Buffer
	tiny bool // accept less than asked without an error
}

func (w *failWriter) Write(p []byte) (int, error) {
	if w.tiny {
		w.got.Write(p[:len(p)/2])
		return len(p) / 2, nil
	}
	if w.got.Len()+len(p) > w.n {
		k := w.n - w.got.Len()
		w.got.Write(p[:k])
		return k, w.err
	}
	return w.got.Write(p)
}

type errAfterReader struct {
	r   io.Reader
	err error
}

func (e *errAfterReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

func TestStreamIOErrors(t *testing.T) {
	errBoom := errors.New("boom")
	in, _, _ := clientSession(t)
	sin := serverSession(t)

	for _, dir := range []Direction{c2s, s2c} {
		src := in
		if dir == s2c {
			src = sin
		}
		t.Run(dir.String()+" write error", func(t *testing.T) {
			w := &failWriter{n: 100, err: errBoom}
			s := NewStreams(fixedFunnel(testReplacement), nil)
			err := copyDir(s, dir, context.Background(), w, iotest.OneByteReader(bytes.NewReader(src)))
			require.ErrorIs(t, err, errBoom)
		})
		t.Run(dir.String()+" short write", func(t *testing.T) {
			s := NewStreams(fixedFunnel(testReplacement), nil)
			err := copyDir(s, dir, context.Background(), &failWriter{tiny: true}, bytes.NewReader(src))
			require.ErrorIs(t, err, io.ErrShortWrite)
		})
		t.Run(dir.String()+" read error mid-packet", func(t *testing.T) {
			cut := src[:HeaderLen+200]
			rec := &recorder{}
			s := NewStreams(nil, rec)
			var out bytes.Buffer
			err := copyDir(s, dir, context.Background(), &out, &errAfterReader{bytes.NewReader(cut), errBoom})
			require.ErrorIs(t, err, errBoom)
			require.Equal(t, cut, out.Bytes(), "everything read is written before the error returns")
			require.Equal(t, []string{"problem " + dir.String() + " truncated"}, rec.filtered("problem"))
			require.ErrorIs(t, rec.errs[0], errBoom)
		})
		t.Run(dir.String()+" canceled", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			s := NewStreams(nil, nil)
			var out bytes.Buffer
			err := copyDir(s, dir, ctx, &out, bytes.NewReader(src))
			require.ErrorIs(t, err, context.Canceled)
			require.Zero(t, out.Len())
		})
	}

	t.Run("funnel callback sees the context", func(t *testing.T) {
		type key struct{}
		ctx := context.WithValue(context.Background(), key{}, "conn-7")
		var seen any
		s := NewStreams(func(ctx context.Context, _ Funnel, _ func(netip.AddrPort) bool) (netip.AddrPort, error) {
			seen = ctx.Value(key{})
			return testReplacement, nil
		}, nil)
		require.NoError(t, s.ClientToServer(ctx, io.Discard, bytes.NewReader(in)))
		require.Equal(t, "conn-7", seen)
	})
}

func copyDir(s *Streams, dir Direction, ctx context.Context, dst io.Writer, src io.Reader) error {
	if dir == c2s {
		return s.ClientToServer(ctx, dst, src)
	}
	return s.ServerToClient(ctx, dst, src)
}

// TestStreamsBothDirections runs a whole session the way the proxy will:
// two goroutines over pipes, sharing one Session, read concurrently.
func TestStreamsBothDirections(t *testing.T) {
	cin, off, n := clientSession(t)
	sin := serverSession(t)
	rec := &recorder{}
	s := NewStreams(fixedFunnel(testReplacement), rec)

	var (
		wg         sync.WaitGroup
		cout, sout bytes.Buffer
		cerr, serr error
	)
	cr, cw := io.Pipe()
	sr, sw := io.Pipe()
	feed := func(w *io.PipeWriter, b []byte, step int) {
		defer wg.Done()
		for len(b) > 0 {
			k := min(step, len(b))
			_, _ = w.Write(b[:k])
			b = b[k:]
		}
		_ = w.Close()
	}
	wg.Add(4)
	go func() { defer wg.Done(); cerr = s.ClientToServer(context.Background(), &cout, cr) }()
	go func() { defer wg.Done(); serr = s.ServerToClient(context.Background(), &sout, sr) }()
	go feed(cw, cin, 7)
	go feed(sw, sin, 13)

	// Whoever holds the lease polls the session meanwhile.
	stop, polled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			default:
				_ = s.Session().BetweenEntries()
				_ = s.Session().FunnelMode()
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-polled

	require.NoError(t, cerr)
	require.NoError(t, serr)
	require.Equal(t, wantClientOutput(t, cin, off, n), cout.Bytes())
	require.Equal(t, sin, sout.Bytes())
	assert.Len(t, rec.filtered("transition"), 10)
	assert.Equal(t, TransportUDP, s.Session().FunnelMode())
}

// TestStreamMemoryBounded: megabytes of Data, raw bytes or rewrites never
// grow the per-direction buffers.
func TestStreamMemoryBounded(t *testing.T) {
	w := &seqWriter{}
	w.cmd(connectedEXMsg())
	big := dataPacket(t, 0, 4, 0, MaxDataPayload)
	for range 64 {
		w.data(big)
	}
	s := NewStreams(fixedFunnel(testReplacement), nil)
	var maxWrite int
	cw := writerFunc(func(p []byte) (int, error) { maxWrite = max(maxWrite, len(p)); return len(p), nil })
	require.NoError(t, s.ServerToClient(context.Background(), cw, bytes.NewReader(w.buf)))
	assert.Nil(t, s.server.big, "the borrowed buffer is back in the pool")
	assert.Len(t, s.server.buf, idleReadLen)
	assert.LessOrEqual(t, maxWrite, MaxCommandLen)

	raw := bytes.Repeat([]byte("x"), 8<<20)
	require.NoError(t, s.ClientToServer(context.Background(), io.Discard, bytes.NewReader(raw)))
	assert.Nil(t, s.client.big, "the borrowed buffer is back in the pool")

	var many []byte
	for i := range 1000 {
		many = AppendCommand(many, uint16(i), msg(MIDConnectFunnel, funnelBody(vlcFunnelName, vlcTrailer)))
	}
	require.NoError(t, s.ClientToServer(context.Background(), io.Discard, bytes.NewReader(many)))
	assert.LessOrEqual(t, cap(s.client.scratch), 1024, "scratch is reused, not grown per funnel")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// countingObserver is what a metrics implementation looks like: counters
// resolved up front into arrays indexed by the enums.
type countingObserver struct {
	messages    [NumDirections][NumMessageKinds]atomic.Uint64
	transitions [NumTransitions]atomic.Uint64
	problems    [NumDirections][NumProblems]atomic.Uint64
}

var _ Observer = (*countingObserver)(nil)

func (c *countingObserver) Message(d Direction, m MID)              { c.messages[d][m.Kind()].Add(1) }
func (c *countingObserver) Transition(t Transition)                 { c.transitions[t].Add(1) }
func (c *countingObserver) Problem(d Direction, p Problem, _ error) { c.problems[d][p].Add(1) }

// TestAllocsPerMessage: the per-message path (commands other than the
// funnel, Data packets) allocates nothing.
func TestAllocsPerMessage(t *testing.T) {
	w := &seqWriter{}
	for range 20 {
		w.cmd(connectMsg()).cmd(openFileMsg("a.asf")).cmd(readBlockMsg(2)).cmd(streamSwitchMsg()).
			cmd(startPlayingMsg(4)).cmd(pongMsg()).cmd(loggingMsg()).cmd(stopPlayingMsg()).cmd(closeFileMsg())
	}
	client := w.buf
	server := serverSession(t)

	for _, obs := range []Observer{nil, &countingObserver{}} {
		s := NewStreams(fixedFunnel(testReplacement), obs)
		ctx := context.Background()
		r := bytes.NewReader(nil)
		for _, tc := range []struct {
			name string
			in   []byte
			run  func() error
		}{
			{"client", client, func() error { return s.ClientToServer(ctx, io.Discard, r) }},
			{"client one byte at a time", client, func() error { return s.ClientToServer(ctx, io.Discard, iotest.OneByteReader(r)) }},
			{"server", server, func() error { return s.ServerToClient(ctx, io.Discard, r) }},
		} {
			r.Reset(tc.in)
			require.NoError(t, tc.run()) // allocates the buffer once
			allocs := testing.AllocsPerRun(20, func() {
				r.Reset(tc.in)
				if err := tc.run(); err != nil {
					t.Fatal(err)
				}
			})
			// OneByteReader is one allocation per run, not per message.
			limit := 0.0
			if strings.Contains(tc.name, "one byte") {
				limit = 1
			}
			assert.LessOrEqual(t, allocs, limit, "%s: allocations per run of %d bytes", tc.name, len(tc.in))
		}
	}
}

func BenchmarkClientToServer(b *testing.B) {
	in, _, _ := clientSession(b)
	s := NewStreams(fixedFunnel(testReplacement), nil)
	r := bytes.NewReader(in)
	ctx := context.Background()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(in)
		if err := s.ClientToServer(ctx, io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClientToServerNoFunnel(b *testing.B) {
	w := &seqWriter{}
	for range 50 {
		w.cmd(readBlockMsg(2)).cmd(streamSwitchMsg()).cmd(startPlayingMsg(4)).cmd(pongMsg())
	}
	s := NewStreams(nil, nil)
	r := bytes.NewReader(w.buf)
	ctx := context.Background()
	b.SetBytes(int64(len(w.buf)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(w.buf)
		if err := s.ClientToServer(ctx, io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkServerToClient(b *testing.B) {
	w := &seqWriter{}
	w.cmd(connectedEXMsg())
	for i := range 200 {
		w.data(dataPacket(b, uint32(i), 4, uint8(i), 1400))
		if i%50 == 0 {
			w.cmd(pingMsg())
		}
	}
	s := NewStreams(nil, nil)
	r := bytes.NewReader(w.buf)
	ctx := context.Background()
	b.SetBytes(int64(len(w.buf)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(w.buf)
		if err := s.ServerToClient(ctx, io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzStream: any bytes through either direction, whole or in pieces: no
// panic, the server side and a client side whose rewrites all fail are
// byte-exact, and segmentation never changes the output or the events.
func FuzzStream(f *testing.F) {
	cin, _, _ := clientSession(f)
	f.Add(cin, []byte{1, 7, 200})
	f.Add(serverSession(f), []byte{3})
	for _, b := range goldenInputs(f) {
		f.Add(b, []byte{5, 1})
	}
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"), []byte{2})
	f.Add(slices.Concat(AppendCommand(nil, 0, connectedEXMsg()), dataPacket(f, 1, 2, 3, 40)), []byte{9, 1})
	refuse := func(context.Context, Funnel, func(netip.AddrPort) bool) (netip.AddrPort, error) {
		return netip.AddrPort{}, errors.New("no")
	}
	f.Fuzz(func(t *testing.T, in, sizes []byte) {
		pieces := make([]int, len(sizes))
		for i, s := range sizes {
			pieces[i] = int(s)
		}
		for _, dir := range []Direction{c2s, s2c} {
			whole, recWhole, err := run(t, dir, bytes.NewReader(in), fixedFunnel(testReplacement))
			require.NoError(t, err)
			split, recSplit, err := run(t, dir, &chunkReader{data: in, sizes: pieces}, fixedFunnel(testReplacement))
			require.NoError(t, err)
			require.True(t, bytes.Equal(whole, split), "segmentation changed the output")
			require.Equal(t, recWhole.list(), recSplit.list(), "segmentation changed the events")

			rewritten := len(recWhole.filtered("transition funnel_udp_rewritten")) > 0
			if dir == s2c || !rewritten {
				require.True(t, bytes.Equal(in, whole), "bytes must pass unchanged")
			}
			if dir == c2s {
				out, _, err := run(t, dir, &chunkReader{data: in, sizes: pieces}, refuse)
				require.NoError(t, err)
				require.True(t, bytes.Equal(in, out), "no rewrite: bytes must pass unchanged")
			}
		}
	})
}
