package rtspfilter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/leases"
	"fwproxy/proxy"
)

// These tests run one Connection's directions over in-memory streams cut
// at every place, with a real lease manager whose range holds exactly one
// pair, so the rewritten ports are known.

const (
	segLeasePort = 46000 // the only run the leases can give
	segClientRTP = 40000 // outside the range: never kept
)

func segEnv(t testing.TB) (*Filter, *countingObserver) {
	t.Helper()
	cfg := leases.DefaultConfig()
	cfg.ListenIP = external
	cfg.PortMin, cfg.PortMax = segLeasePort, segLeasePort+1
	lm, err := leases.New(cfg, leases.Deps{})
	require.NoError(t, err)
	t.Cleanup(func() { lm.Close() })
	fcfg := DefaultConfig()
	fcfg.ExternalIP = external
	fcfg.AcquireTimeout = testTimeout
	obs := &countingObserver{}
	f, err := New(fcfg, Deps{Leases: lm, Observer: obs})
	require.NoError(t, err)
	return f, obs
}

func segInfo() proxy.SessionInfo {
	return proxy.SessionInfo{
		Client: netip.MustParseAddrPort("127.0.0.1:51000"),
		Target: netip.MustParseAddrPort("127.0.0.1:554"),
		Local:  netip.MustParseAddrPort("127.0.0.2:52000"),
	}
}

// chunkReader returns its data k bytes at a time.
type chunkReader struct {
	data []byte
	cuts []int // read boundaries, ascending
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.cuts) > 0 {
		n = r.cuts[0]
		r.cuts = r.cuts[1:]
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// chunks cuts data into k-byte reads; split cuts it once at i.
func chunks(data []byte, k int) io.Reader {
	var cuts []int
	for range len(data)/k + 1 {
		cuts = append(cuts, k)
	}
	return &chunkReader{data: data, cuts: cuts}
}

func split(data []byte, i int) io.Reader {
	return &chunkReader{data: data, cuts: []int{i, len(data)}}
}

const sdpBody = "v=0\r\no=- 0 0 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nm=audio 0 RTP/AVP 0\r\na=control:trackID=0\r\n" +
	"a=x-note:Transport: RTP/AVP;client_port=40000-40001\r\n"

var (
	clientStream = "OPTIONS rtsp://192.0.2.10/s RTSP/1.0\r\nCSeq: 1\r\n\r\n" +
		fmt.Sprintf("ANNOUNCE rtsp://192.0.2.10/s RTSP/1.0\r\nCSeq: 2\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", len(sdpBody), sdpBody) +
		"$\x00\x00\x05hello" +
		"\r\n" +
		"SETUP rtsp://192.0.2.10/s/trackID=0 RTSP/1.0\r\nCSeq: 3\r\ntransport: RTP/AVP;unicast;client_port=40000-40001;destination=10.1.2.3,RTP/AVP/TCP;interleaved=0-1\r\nUser-Agent: t\r\n\r\n" +
		"$\x01\x00\x00" +
		"PLAY rtsp://192.0.2.10/s RTSP/2.0\r\nCSeq: 4\r\nSession: abc\r\n\r\n"
	// clientWant is clientStream as the server must get it: one header
	// line differs.
	clientWant = strings.Replace(clientStream,
		"transport: RTP/AVP;unicast;client_port=40000-40001;destination=10.1.2.3,RTP/AVP/TCP;interleaved=0-1\r\n",
		"transport: RTP/AVP;unicast;client_port=46000-46001;destination=127.0.0.2,RTP/AVP/TCP;interleaved=0-1\r\n", 1)

	serverStream = "RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n" +
		"RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n" +
		"$\x00\x01\x00" + strings.Repeat("\xff", 256) +
		"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: abc;timeout=60\r\nTransport: RTP/AVP;unicast;client_port=46000-46001;server_port=30000-30001;source=127.0.0.9;destination=127.0.0.2\r\n\r\n" +
		"SET_PARAMETER rtsp://192.0.2.10/s RTSP/1.0\r\nCSeq: 7\r\nContent-Length: 5\r\n\r\nhello" +
		"RTSP/2.0 200 OK\r\nCSeq: 4\r\nContent-Length: 5\r\n\r\n$\x00\x00\x01"
	serverWant = strings.Replace(serverStream,
		"Transport: RTP/AVP;unicast;client_port=46000-46001;server_port=30000-30001;source=127.0.0.9;destination=127.0.0.2\r\n",
		"Transport: RTP/AVP;unicast;client_port=40000-40001;server_port=30000-30001;source=127.0.0.9;destination=10.1.2.3\r\n", 1)
)

// runBoth relays the client stream, then the server's, through one
// connection and returns what each side got.
func runBoth(t *testing.T, f *Filter, client, server io.Reader) (toServer, toClient string) {
	t.Helper()
	c := f.NewConnection(segInfo())
	defer c.Close()
	var a, b bytes.Buffer
	require.NoError(t, c.ClientToServer(context.Background(), &a, client))
	require.NoError(t, c.ServerToClient(context.Background(), &b, server))
	return a.String(), b.String()
}

func TestRelayEverySegmentation(t *testing.T) {
	f, obs := segEnv(t)
	check := func(t *testing.T, name string, cr, sr io.Reader) {
		toServer, toClient := runBoth(t, f, cr, sr)
		require.Equal(t, clientWant, toServer, "%s: the server gets the client's bytes, one Transport line rewritten", name)
		require.Equal(t, serverWant, toClient, "%s: the client gets the server's bytes, the SETUP reply restored", name)
	}
	for k := 1; k <= 64; k++ {
		check(t, fmt.Sprintf("reads of %d", k), chunks([]byte(clientStream), k), chunks([]byte(serverStream), k))
	}
	for i := 1; i < len(clientStream); i++ {
		check(t, fmt.Sprintf("client cut at %d", i), split([]byte(clientStream), i), strings.NewReader(serverStream))
	}
	for i := 1; i < len(serverStream); i++ {
		check(t, fmt.Sprintf("server cut at %d", i), strings.NewReader(clientStream), split([]byte(serverStream), i))
	}
	assert.Zero(t, obs.problems[DirClientToServer][ProblemNotRTSP].Load()+obs.problems[DirServerToClient][ProblemNotRTSP].Load())
	assert.Equal(t, obs.setups[SetupAnnounced][OutcomeAccepted].Load(), int64(64+len(clientStream)-1+len(serverStream)-1))
	assert.Equal(t, obs.dests.Load(), obs.setups[SetupAnnounced][OutcomeAccepted].Load(), "one destination rewritten per SETUP")
}

func TestRelayNotRTSPPassesUntouched(t *testing.T) {
	f, obs := segEnv(t)
	tests := []struct {
		name    string
		in      string
		problem Problem
	}{
		{"HTTP", "GET / HTTP/1.1\r\nHost: x\r\n\r\nSETUP rtsp://x/ RTSP/1.0\r\nTransport: RTP/AVP;client_port=40000-40001\r\n\r\n", ProblemNotRTSP},
		{"binary without a line end", "\x30\x26\xb2\x75\x8e\x66\xcf\x11", ProblemNotRTSP},
		{"a first line too long to be RTSP", "OPTIONS " + strings.Repeat("a", 2*MaxHeadBytes) + "\r\n\r\n", ProblemNotRTSP},
		{"an RTSP-looking word, then the end", "OPTIONS", ProblemTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := obs.problems[DirClientToServer][tt.problem].Load()
			toServer, _ := runBoth(t, f, chunks([]byte(tt.in), 3), strings.NewReader(""))
			assert.True(t, tt.in == toServer, "passed untouched: %d bytes in, %d out", len(tt.in), len(toServer))
			assert.Equal(t, before+1, obs.problems[DirClientToServer][tt.problem].Load(), "counted")
		})
	}
}

func TestRelayTruncated(t *testing.T) {
	f, obs := segEnv(t)
	for _, in := range []string{
		"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n",
		"RTSP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nabc",
		"$\x00\x00\x10abc",
		"$\x00",
	} {
		before := obs.problems[DirServerToClient][ProblemTruncated].Load()
		c := f.NewConnection(segInfo())
		var out bytes.Buffer
		require.NoError(t, c.ServerToClient(context.Background(), &out, strings.NewReader(in)))
		c.Close()
		assert.Equal(t, in, out.String(), "what was read is forwarded")
		assert.Equal(t, before+1, obs.problems[DirServerToClient][ProblemTruncated].Load(), "%q counted", in)
	}
}
