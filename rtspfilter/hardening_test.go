package rtspfilter

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/leakcheck"
	"fwproxy/internal/socksclient"
)

// TestHostileClient sends what a hostile (or broken) client on the same
// machine can: each gets an RTSP error and a counted problem, the server
// never sees the bad message, and nothing is left behind.
func TestHostileClient(t *testing.T) {
	setup := "SETUP rtsp://%s/stream/trackID=0 RTSP/1.0\r\nCSeq: 7\r\nTransport: %s\r\n\r\n"
	tests := []struct {
		name    string
		msg     func(server string) string
		status  base.StatusCode
		closed  bool // the proxy ends the connection after its answer
		problem Problem
	}{
		{"a huge header", func(string) string {
			return "OPTIONS * RTSP/1.0\r\nCSeq: 7\r\nX-Pad: " + strings.Repeat("a", 2*MaxHeadBytes) + "\r\n\r\n"
		}, base.StatusBadRequest, true, ProblemHeaderTooLarge},
		{"too many headers", func(string) string {
			return "OPTIONS * RTSP/1.0\r\nCSeq: 7\r\n" + strings.Repeat("X-A: b\r\n", 10*MaxHeaders) + "\r\n"
		}, base.StatusBadRequest, true, ProblemTooManyHeaders},
		{"a bad length", func(string) string {
			return "ANNOUNCE rtsp://x/ RTSP/1.0\r\nCSeq: 7\r\nContent-Length: -5\r\n\r\n"
		}, base.StatusBadRequest, true, ProblemBadHeader},
		{"two lengths", func(string) string {
			return "ANNOUNCE rtsp://x/ RTSP/1.0\r\nCSeq: 7\r\nContent-Length: 5\r\nContent-Length: 500000\r\n\r\nhello"
		}, base.StatusBadRequest, true, ProblemBadHeader},
		{"1000 transports", func(s string) string {
			return fmt.Sprintf(setup, s, strings.TrimSuffix(strings.Repeat("RTP/AVP;unicast;client_port=40000-40001,", 1000), ","))
		}, base.StatusBadRequest, true, ProblemHeaderTooLarge},
		{"300 transports", func(s string) string {
			return fmt.Sprintf(setup, s, strings.TrimSuffix(strings.Repeat("RTP/AVP;unicast;client_port=40000-40001,", 300), ","))
		}, base.StatusUnsupportedTransport, false, ProblemBadTransport},
		{"a transport that does not parse", func(s string) string {
			return fmt.Sprintf(setup, s, `RTP/AVP;unicast;client_port=40000-40001;x="unterminated`)
		}, base.StatusUnsupportedTransport, false, ProblemBadTransport},
		{"only ports that are not ports", func(s string) string {
			return fmt.Sprintf(setup, s, "RTP/AVP;unicast;client_port=0-1")
		}, base.StatusUnsupportedTransport, false, ProblemUnsupportedTransport},
		{"an RTSP 2.0 dest_addr that does not parse", func(s string) string {
			return fmt.Sprintf(setup, s, `RTP/AVP;unicast;dest_addr=:40000/:40001`)
		}, base.StatusUnsupportedTransport, false, ProblemUnsupportedTransport},
		{"an RTSP 2.0 dest_addr with an IPv6 literal unbracketed", func(s string) string {
			return fmt.Sprintf(setup, s, `RTP/AVP;unicast;dest_addr="2001:db8::1:40000"/"2001:db8::1:40001"`)
		}, base.StatusUnsupportedTransport, false, ProblemUnsupportedTransport},
		{"multicast to a unicast host", func(s string) string {
			return fmt.Sprintf(setup, s, `RTP/AVP/UDP;multicast;dest_addr="198.51.100.9:40000"/"198.51.100.9:40001"`)
		}, base.StatusUnsupportedTransport, false, ProblemUnsupportedTransport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newFilterEnv(t, envOptions{linger: testTimeout})
			c := env.dial(t)
			_, err := io.WriteString(c.conn, tt.msg(env.server.addr.String()))
			require.NoError(t, err)
			res := c.recv()
			assert.Equal(t, tt.status, res.StatusCode)
			assert.Equal(t, base.HeaderValue{"7"}, res.Header["CSeq"], "the answer names the request")
			assert.Equal(t, int64(1), env.obs.problems[DirClientToServer][tt.problem].Load(), "counted")
			if tt.closed {
				// EOF, or a reset when the proxy closed with the
				// rest of the message unread.
				_, err := c.br.ReadByte()
				assert.Error(t, err, "the connection ends: its framing is lost")
			} else {
				// The connection goes on: the next request is served.
				res := c.do(base.Options, c.base, nil)
				assert.Equal(t, base.StatusOK, res.StatusCode)
				assert.Equal(t, int64(1), env.obs.setups[SetupNone][OutcomeProxyRefused].Load())
			}
			env.server.mu.Lock()
			assert.Empty(t, env.server.setups, "the server never saw the SETUP")
			env.server.mu.Unlock()

			c.conn.Close()
			leakcheck.Require(t, testTimeout, leakcheck.Filter{Frames: []string{"fwproxy/rtspfilter.("}})
			assert.Zero(t, env.leases.Stats().Active, "no lease held")
			require.Eventually(t, func() bool { return env.obs.conns.Load() == 0 }, testTimeout, time.Millisecond, "the connection is closed")
		})
	}
}

// TestFilterRefusesWhatCannotPass: when no lease can be had, a SETUP that
// offers only UDP is answered 461 by the proxy and never reaches the
// server (it would send to a port nobody holds); one that also offers TCP
// reaches the server with TCP only, and the media flows interleaved.
func TestFilterRefusesWhatCannotPass(t *testing.T) {
	// The leases' whole range is taken by someone else.
	const lo = 47000
	env := newFilterEnv(t, envOptions{linger: testTimeout, leasePorts: [2]uint16{lo, lo + 1}})
	holdBusy(t, lo, lo+1)

	c := env.dial(t)
	u := c.describe()
	res, _, _ := c.setup(u, "RTP/AVP;unicast;client_port=40000-40001", "")
	assert.Equal(t, base.StatusUnsupportedTransport, res.StatusCode, "461: players fall back to TCP on it")
	env.server.mu.Lock()
	assert.Empty(t, env.server.setups, "the server never saw the SETUP")
	env.server.mu.Unlock()
	assert.Equal(t, int64(1), env.obs.problems[DirClientToServer][ProblemLeaseFailed].Load())

	res, th, sess := c.setup(u, "RTP/AVP;unicast;client_port=40000-40001,RTP/AVP/TCP;unicast;interleaved=0-1", "")
	require.Equal(t, base.StatusOK, res.StatusCode)
	assert.Equal(t, "RTP/AVP/TCP;unicast;interleaved=0-1", env.server.lastSetup().transport, "only what can pass is offered")
	assert.Equal(t, headers.TransportProtocolTCP, th.Protocol)
	c.play(sess)
	env.server.pump(t)
	b := make([]byte, 4)
	_, err := io.ReadFull(c.br, b)
	require.NoError(t, err)
	assert.Equal(t, byte('$'), b[0], "RTP interleaved on the control connection")
	assert.Equal(t, int64(1), env.obs.setups[SetupUnfiltered][OutcomeAccepted].Load())
	assert.Equal(t, int64(1), env.obs.setups[SetupNone][OutcomeProxyRefused].Load())
}

// lockedBuffer is a log sink the filter's goroutines write while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRefusalsDoNotFloodTheLog: a client that repeats a SETUP the proxy
// refuses gets 461 every time, each counted, but only the first refusal
// of its connection is a warning; the others are debug lines.
func TestRefusalsDoNotFloodTheLog(t *testing.T) {
	const lo, refusals = 47010, 5
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	env := newFilterEnv(t, envOptions{linger: testTimeout, leasePorts: [2]uint16{lo, lo + 1}, logger: logger})
	holdBusy(t, lo, lo+1)

	c := env.dial(t)
	u := c.describe()
	for range refusals {
		res, _, _ := c.setup(u, "RTP/AVP;unicast;client_port=40000-40001", "")
		require.Equal(t, base.StatusUnsupportedTransport, res.StatusCode)
	}
	assert.Equal(t, int64(refusals), env.obs.setups[SetupNone][OutcomeProxyRefused].Load(), "every refusal counted")
	out := logs.String()
	assert.Equal(t, refusals, strings.Count(out, "SETUP refused with 461"), "every refusal logged")
	assert.Equal(t, 1, strings.Count(out, "level=WARN msg=\"rtsp: SETUP refused with 461\""), "one warning per connection:\n%s", out)
}

func TestFilterGroupLimit(t *testing.T) {
	env := newFilterEnv(t, envOptions{linger: testTimeout, cfg: func(c *Config) { c.MaxGroups = 1 }})
	c := env.dial(t)
	u := c.describe()
	a, b := rtpPorts(t)
	res, _, sess := c.setup(u, fmt.Sprintf("RTP/AVP;unicast;client_port=%d-%d", portOf(a), portOf(b)), "")
	require.Equal(t, base.StatusOK, res.StatusCode)
	// A second stream on the same connection needs a second group.
	res, _, _ = c.setup(u, "RTP/AVP;unicast;client_port=40010-40011", sess)
	assert.Equal(t, base.StatusUnsupportedTransport, res.StatusCode)
	assert.Equal(t, int64(1), env.obs.problems[DirClientToServer][ProblemGroupLimit].Load())
	assert.Len(t, env.server.setups, 1, "the server saw only the first")

	// TEARDOWN frees the group: the next SETUP gets one.
	c.teardown(sess)
	res, _, _ = c.setup(u, "RTP/AVP;unicast;client_port=40010-40011", "")
	assert.Equal(t, base.StatusOK, res.StatusCode)
}

// TestFilterSessionEndsReleaseEverything: closing the control connection
// releases its groups (they linger for the client's next connection).
func TestFilterConnectionCloseReleases(t *testing.T) {
	env := newFilterEnv(t, envOptions{linger: testTimeout})
	c := env.dial(t)
	u := c.describe()
	a, b := rtpPorts(t)
	res, _, _ := c.setup(u, fmt.Sprintf("RTP/AVP;unicast;client_port=%d-%d", portOf(a), portOf(b)), "")
	require.Equal(t, base.StatusOK, res.StatusCode)
	assert.Equal(t, 2, env.leases.Stats().Active)
	c.conn.Close()
	require.Eventually(t, func() bool {
		s := env.leases.Stats()
		return s.Active == 0 && s.Lingering == 2
	}, testTimeout, time.Millisecond, "released: lingering, not closed")
}

// TestAnswerWhileServerRelaysRaw: a server whose stream is not RTSP is
// relayed untouched and stays open; the proxy's own answer to a refused
// SETUP still reaches the client at once, after what the server sent.
func TestAnswerWhileServerRelaysRaw(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	env := newFilterEnv(t, envOptions{linger: testTimeout, extraPorts: []uint16{uint16(ln.Addr().(*net.TCPAddr).Port)}})
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("\x00\x01 not RTSP\r\n"))
			accepted <- c
		}
	}()
	d := socksclient.Dialer{Proxy: env.proxyAddr, Timeout: testTimeout}
	conn, err := d.Connect(context.Background(), socksclient.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	srv := <-accepted
	t.Cleanup(func() { srv.Close() })
	conn.SetDeadline(time.Now().Add(testTimeout))
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "\x00\x01 not RTSP\r\n", line, "the server's bytes, untouched")

	_, err = io.WriteString(conn, "SETUP rtsp://x/s RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP;unicast;client_port=0-1\r\n\r\n")
	require.NoError(t, err)
	var res base.Response
	require.NoError(t, res.Unmarshal(br), "the proxy's answer, while the server's stream is still open")
	assert.Equal(t, base.StatusUnsupportedTransport, res.StatusCode)
	assert.Equal(t, int64(1), env.obs.problems[DirServerToClient][ProblemNotRTSP].Load())
}

// TestRefusalKeepsPipelineOrder: pipelined requests get their answers in
// request order, the proxy's own 461 among the server's.
func TestRefusalKeepsPipelineOrder(t *testing.T) {
	env := newFilterEnv(t, envOptions{linger: testTimeout})
	c := env.dial(t)
	url := "rtsp://" + env.server.addr.String() + "/stream"
	pipeline := "OPTIONS " + url + " RTSP/1.0\r\nCSeq: 1\r\n\r\n" +
		"SETUP " + url + "/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP;unicast;client_port=0-1\r\n\r\n" +
		"OPTIONS " + url + " RTSP/1.0\r\nCSeq: 3\r\n\r\n"
	_, err := io.WriteString(c.conn, pipeline)
	require.NoError(t, err)
	for _, want := range []struct {
		cseq   string
		status base.StatusCode
	}{{"1", base.StatusOK}, {"2", base.StatusUnsupportedTransport}, {"3", base.StatusOK}} {
		res := c.recv()
		assert.Equal(t, base.HeaderValue{want.cseq}, res.Header["CSeq"])
		assert.Equal(t, want.status, res.StatusCode, "CSeq %s", want.cseq)
	}
}
