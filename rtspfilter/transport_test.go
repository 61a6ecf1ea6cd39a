package rtspfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTransport(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		kinds []specKind
		err   error
	}{
		{"unicast UDP", "RTP/AVP;unicast;client_port=4588-4589", []specKind{kindUDP}, nil},
		{"explicit UDP, lower case", "rtp/avp/udp;unicast;client_port=4588", []specKind{kindUDP}, nil},
		{"every RTP profile", "RTP/AVPF;client_port=2-3,RTP/SAVP;client_port=4-5,RTP/SAVPF;client_port=6-7", []specKind{kindUDP, kindUDP, kindUDP}, nil},
		{"alternatives", "RTP/AVP;unicast;client_port=4588-4589, RTP/AVP/TCP;unicast;interleaved=0-1", []specKind{kindUDP, kindTCP}, nil},
		{"interleaved without TCP", "RTP/AVP;interleaved=0-1", []specKind{kindTCP}, nil},
		{"multicast", "RTP/AVP;multicast;destination=232.1.1.1;port=5000-5001;ttl=16", []specKind{kindMulticast}, nil},
		{"unknown transport", "x-real-rdt/udp;client_port=6970", []specKind{kindUnsupported}, nil},
		{"RTSP 2.0 dest_addr", `RTP/AVP;unicast;dest_addr=":4588"/":4589"`, []specKind{kindUnsupported}, nil},
		{"quoted comma", `RTP/AVP;unicast;client_port=4588-4589;x-note="a,b;c"`, []specKind{kindUDP}, nil},
		{"empty parameter", "RTP/AVP;;unicast;client_port=4588-4589", []specKind{kindUDP}, nil},

		{"no profile", "RTP;client_port=1-2", nil, ErrTransportSyntax},
		{"empty", "", nil, ErrTransportSyntax},
		{"unterminated quote", `RTP/AVP;x="abc`, nil, ErrTransportSyntax},
		{"bad parameter name", "RTP/AVP;cli ent=1", nil, ErrTransportSyntax},
		{"too many specs", strings.Repeat("RTP/AVP/TCP;interleaved=0-1,", MaxTransportSpecs) + "RTP/AVP/TCP", nil, ErrTooManyTransports},
		{"a thousand specs", strings.Repeat("RTP/AVP;client_port=4000-4001,", 1000), nil, ErrTooManyTransports},
		{"too many parameters", "RTP/AVP" + strings.Repeat(";unicast", maxParams+1), nil, ErrTransportSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			specs, err := parseTransport(tt.in)
			if tt.err != nil {
				assert.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			var kinds []specKind
			for _, s := range specs {
				kinds = append(kinds, s.kind())
			}
			assert.Equal(t, tt.kinds, kinds)
			assert.Equal(t, strings.ReplaceAll(tt.in, ", ", ","), string(appendTransport(nil, specs)), "unchanged specs keep their bytes")
		})
	}
}

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in     string
		a, b   uint16
		single bool
		ok     bool
	}{
		{"4588-4589", 4588, 4589, false, true},
		{"4588", 4588, 0, true, true},
		{"4588-4600", 4588, 4600, false, true},
		{"0-1", 0, 0, false, false},
		{"4589-4588", 0, 0, false, false},
		{"4588-4588", 0, 0, false, false},
		{"65536", 0, 0, false, false},
		{"-1", 0, 0, false, false},
		{"12a", 0, 0, false, false},
		{"", 0, 0, false, false},
		{"000004588", 0, 0, false, false},
	}
	for _, tt := range tests {
		a, b, single, err := parsePortRange(tt.in)
		if !tt.ok {
			assert.ErrorIs(t, err, ErrClientPort, "%q", tt.in)
			continue
		}
		require.NoError(t, err, "%q", tt.in)
		assert.Equal(t, []any{tt.a, tt.b, tt.single}, []any{a, b, single}, "%q", tt.in)
	}
}

// shiftLease "leases" announced ports at +1000, consecutive from the first.
func shiftLease(calls *[][]uint16) leaseFunc {
	return func(announced []uint16) ([]uint16, error) {
		*calls = append(*calls, announced)
		out := make([]uint16, len(announced))
		for i := range announced {
			out[i] = announced[0] + 1000 + uint16(i)
		}
		return out, nil
	}
}

var proxyExternal = netip.MustParseAddr("203.0.113.7")

// TestRewriteTransportGolden pins the rewritten bytes.
func TestRewriteTransportGolden(t *testing.T) {
	tests := []struct {
		name     string
		in, out  string
		leased   [][]uint16
		actions  [NumTransportActions]int
		dests    int
		problems []Problem
		kept     int
	}{
		{"pair", "RTP/AVP;unicast;client_port=4588-4589",
			"RTP/AVP;unicast;client_port=5588-5589",
			[][]uint16{{4588, 4589}}, [NumTransportActions]int{TransportRewritten: 1}, 0, nil, 1},
		{"single port leases RTCP too", "RTP/AVP/UDP;unicast;client_port=4588;mode=\"PLAY\"",
			"RTP/AVP/UDP;unicast;client_port=5588-5589;mode=\"PLAY\"",
			[][]uint16{{4588, 4589}}, [NumTransportActions]int{TransportRewritten: 1}, 0, nil, 1},
		{"destination to the proxy", "RTP/AVP;unicast;destination=192.0.2.99;client_port=4588-4589",
			"RTP/AVP;unicast;destination=203.0.113.7;client_port=5588-5589",
			[][]uint16{{4588, 4589}}, [NumTransportActions]int{TransportRewritten: 1}, 1, nil, 1},
		{"bare destination dropped", "RTP/AVP;unicast;destination;client_port=4588-4589",
			"RTP/AVP;unicast;client_port=5588-5589",
			[][]uint16{{4588, 4589}}, [NumTransportActions]int{TransportRewritten: 1}, 1, nil, 1},
		{"TCP and multicast pass byte for byte", "RTP/AVP;unicast;client_port=4588-4589, RTP/AVP/TCP;unicast;interleaved=0-1 ,RTP/AVP;multicast;destination=232.1.1.1",
			"RTP/AVP;unicast;client_port=5588-5589,RTP/AVP/TCP;unicast;interleaved=0-1,RTP/AVP;multicast;destination=232.1.1.1",
			[][]uint16{{4588, 4589}}, [NumTransportActions]int{TransportRewritten: 1, TransportPassed: 2}, 0, nil, 3},
		{"unsupported UDP dropped, TCP kept", "x-real-rdt/udp;client_port=6970,RTP/AVP;unicast;client_port=0-1,RTP/AVP;unicast,RTP/AVP/TCP;interleaved=0-1",
			"RTP/AVP/TCP;interleaved=0-1",
			nil, [NumTransportActions]int{TransportDropped: 3, TransportPassed: 1}, 0,
			[]Problem{ProblemUnsupportedTransport, ProblemUnsupportedTransport, ProblemUnsupportedTransport}, 1},
		{"nothing left", `RTP/AVP;unicast;dest_addr=":4588"/":4589"`, "",
			nil, [NumTransportActions]int{TransportDropped: 1}, 0, []Problem{ProblemUnsupportedTransport}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls [][]uint16
			rw, err := rewriteTransport(tt.in, proxyExternal, shiftLease(&calls))
			require.NoError(t, err)
			assert.Equal(t, tt.out, rw.value)
			assert.Equal(t, tt.leased, calls)
			assert.Equal(t, tt.actions, rw.actions)
			assert.Equal(t, tt.dests, rw.destinations)
			assert.Equal(t, tt.kept, rw.kept)
			var problems []Problem
			for _, d := range rw.dropped {
				problems = append(problems, d.Problem)
			}
			assert.Equal(t, tt.problems, problems)
		})
	}
}

func TestRewriteTransportLeaseFailure(t *testing.T) {
	fail := func([]uint16) ([]uint16, error) {
		return nil, &SpecError{Problem: ProblemGroupLimit, Err: errors.New("full")}
	}
	rw, err := rewriteTransport("RTP/AVP;unicast;client_port=4588-4589,RTP/AVP/TCP;interleaved=0-1", proxyExternal, fail)
	require.NoError(t, err)
	assert.Equal(t, "RTP/AVP/TCP;interleaved=0-1", rw.value, "the spec that could not be leased is not offered")
	require.Len(t, rw.dropped, 1)
	assert.Equal(t, ProblemGroupLimit, rw.dropped[0].Problem)

	plain := func([]uint16) ([]uint16, error) { return nil, errors.New("no port") }
	rw, err = rewriteTransport("RTP/AVP;unicast;client_port=4588-4589", proxyExternal, plain)
	require.NoError(t, err)
	assert.Zero(t, rw.kept)
	assert.Equal(t, ProblemLeaseFailed, rw.dropped[0].Problem)
}

func TestRestoreTransport(t *testing.T) {
	leased := []leasedSpec{
		{announced: []uint16{4588, 4589}, external: []uint16{5588, 5589}, portText: "4588-4589", dest: "192.0.2.99", hasDest: true},
		{announced: []uint16{6000, 6001}, external: []uint16{7000, 7001}, portText: "6000"},
		// A firewall client's associations on ports that are not a pair.
		{announced: []uint16{8000, 8001}, external: []uint16{50881, 11382}, portText: "8000-8001"},
	}
	tests := []struct {
		name      string
		in, out   string
		chosen    int
		source    string
		unmatched bool
	}{
		{"first spec", "RTP/AVP;unicast;client_port=5588-5589;server_port=30000-30001;ssrc=0BADCAFE",
			"RTP/AVP;unicast;client_port=4588-4589;server_port=30000-30001;ssrc=0BADCAFE", 0, "", false},
		{"destination and source", "RTP/AVP;unicast;destination=203.0.113.7;source=198.51.100.20;client_port=5588-5589;server_port=30000-30001",
			"RTP/AVP;unicast;destination=192.0.2.99;source=198.51.100.20;client_port=4588-4589;server_port=30000-30001", 0, "198.51.100.20", false},
		{"second spec, as the client wrote it", "RTP/AVP;unicast;client_port=7000-7001", "RTP/AVP;unicast;client_port=6000", 1, "", false},
		{"TCP chosen", "RTP/AVP/TCP;unicast;interleaved=0-1", "RTP/AVP/TCP;unicast;interleaved=0-1", -1, "", false},
		{"ports that are not a range, echoed", "RTP/AVP;unicast;client_port=50881-11382;server_port=30000-30001",
			"RTP/AVP;unicast;client_port=8000-8001;server_port=30000-30001", 2, "", false},
		{"only the first port echoed", "RTP/AVP;unicast;client_port=5588", "RTP/AVP;unicast;client_port=4588-4589", 0, "", false},
		{"first port leased, second not", "RTP/AVP;unicast;client_port=5588-9999", "RTP/AVP;unicast;client_port=5588-9999", -1, "", true},
		{"ports never leased", "RTP/AVP;unicast;client_port=9000-9001", "RTP/AVP;unicast;client_port=9000-9001", -1, "", true},
		{"source is a name", "RTP/AVP;unicast;client_port=5588-5589;source=media.example", "RTP/AVP;unicast;client_port=4588-4589;source=media.example", 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, err := restoreTransport(tt.in, leased)
			require.NoError(t, err)
			assert.Equal(t, tt.out, rt.value)
			assert.Equal(t, tt.chosen, rt.chosen)
			assert.Equal(t, tt.unmatched, rt.unmatched)
			if tt.source != "" {
				assert.Equal(t, netip.MustParseAddr(tt.source), rt.source)
			} else {
				assert.False(t, rt.source.IsValid())
			}
		})
	}
}

func TestAppendHeadWith(t *testing.T) {
	in := "SETUP rtsp://192.0.2.1/s RTSP/1.0\r\nCSeq: 3\r\ntransport:RTP/AVP;\r\n\tclient_port=4588-4589\r\nUser-Agent: x\r\n\r\n"
	h, err := parseHead([]byte(in))
	require.NoError(t, err)
	h.raw = []byte(in)
	out := appendHeadWith(nil, &h, []replacement{{index: 1, value: "RTP/AVP;client_port=5588-5589"}})
	assert.Equal(t, "SETUP rtsp://192.0.2.1/s RTSP/1.0\r\nCSeq: 3\r\ntransport: RTP/AVP;client_port=5588-5589\r\nUser-Agent: x\r\n\r\n", string(out),
		"only the replaced field's lines change; the name keeps its case")
	assert.Equal(t, fmt.Sprint(len(in)), fmt.Sprint(len(appendHeadWith(nil, &h, nil))), "no replacement: the same bytes")
}
