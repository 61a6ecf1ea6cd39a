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
		{"RTSP 2.0 dest_addr", `RTP/AVP;unicast;dest_addr=":4588"/":4589"`, []specKind{kindUDP}, nil},
		{"RTSP 2.0 interleaved", `RTP/AVP/TCP;unicast;interleaved=0-1`, []specKind{kindTCP}, nil},
		{"interleaved over UDP with an address", `RTP/AVP;unicast;interleaved=0-1;dest_addr="198.51.100.9:4588"`, []specKind{kindUnsupported}, nil},
		{"RTSP 2.0 RTP over a TCP connection", `RTP/AVP/TCP;unicast;dest_addr=":4588";setup=active`, []specKind{kindUnsupported}, nil},
		{"RTSP 2.0 multicast", `RTP/AVP/UDP;multicast;dest_addr="232.1.1.1:5000"/"232.1.1.1:5001";ttl=16`, []specKind{kindMulticast}, nil},
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

// shiftLease "leases" announced ports at +1000, consecutive from the first;
// above the range it has no ports, as a lease manager would have none.
func shiftLease(calls *[][]uint16) leaseFunc {
	return func(announced []uint16) ([]uint16, error) {
		if int(announced[0])+1000+len(announced) > 65536 {
			return nil, errors.New("no free ports")
		}
		*calls = append(*calls, announced)
		out := make([]uint16, len(announced))
		for i := range announced {
			out[i] = announced[0] + 1000 + uint16(i)
		}
		return out, nil
	}
}

var (
	proxyExternal = netip.MustParseAddr("203.0.113.7")
	// controlClient is where the SETUP's control connection comes from.
	controlClient = netip.MustParseAddr("192.0.2.10")
)

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
		{"nothing left", `x-real-rdt/udp;unicast;client_port=6970`, "",
			nil, [NumTransportActions]int{TransportDropped: 1}, 0, []Problem{ProblemUnsupportedTransport}, 0},
		{"1.0 multicast to a unicast host dropped", "RTP/AVP;multicast;destination=198.51.100.9;port=5000-5001,RTP/AVP/TCP;interleaved=0-1",
			"RTP/AVP/TCP;interleaved=0-1",
			nil, [NumTransportActions]int{TransportDropped: 1, TransportPassed: 1}, 0, []Problem{ProblemUnsupportedTransport}, 1},

		// RTSP 2.0 (RFC 7826 §18.54): dest_addr, RTP then RTCP.
		{"2.0 ports only", `RTP/AVP/UDP;unicast;dest_addr=":4588"/":4589"`,
			`RTP/AVP/UDP;unicast;dest_addr="203.0.113.7:5588"/"203.0.113.7:5589"`,
			[][]uint16{{4588, 4589}}, [NumTransportActions]int{TransportRewritten: 1}, 0, nil, 1},
		{"2.0 the client's own address", `RTP/AVP;unicast;dest_addr="192.0.2.10:4588"/"192.0.2.10:4589";mode="PLAY"`,
			`RTP/AVP;unicast;dest_addr="203.0.113.7:5588"/"203.0.113.7:5589";mode="PLAY"`,
			[][]uint16{{4588, 4589}}, [NumTransportActions]int{TransportRewritten: 1}, 0, nil, 1},
		{"2.0 a third party", `RTP/AVP;unicast;dest_addr="198.51.100.9:4588"/"198.51.100.9:4589"`,
			`RTP/AVP;unicast;dest_addr="203.0.113.7:5588"/"203.0.113.7:5589"`,
			[][]uint16{{4588, 4589}}, [NumTransportActions]int{TransportRewritten: 1}, 1, nil, 1},
		{"2.0 a third party's IPv6 literal", `RTP/SAVPF;unicast;dest_addr="[2001:db8::1]:4588"/"[2001:db8::1]:4589"`,
			`RTP/SAVPF;unicast;dest_addr="203.0.113.7:5588"/"203.0.113.7:5589"`,
			[][]uint16{{4588, 4589}}, [NumTransportActions]int{TransportRewritten: 1}, 1, nil, 1},
		{"2.0 a name for RTP only", `RTP/AVP;unicast;dest_addr="media.example:4588"/":4589"`,
			`RTP/AVP;unicast;dest_addr="203.0.113.7:5588"/"203.0.113.7:5589"`,
			[][]uint16{{4588, 4589}}, [NumTransportActions]int{TransportRewritten: 1}, 1, nil, 1},
		{"2.0 one address leases RTCP too", `RTP/AVP;unicast;dest_addr=":4588"`,
			`RTP/AVP;unicast;dest_addr="203.0.113.7:5588"/"203.0.113.7:5589"`,
			[][]uint16{{4588, 4589}}, [NumTransportActions]int{TransportRewritten: 1}, 0, nil, 1},
		{"2.0 RTCP-mux: one port", `RTP/AVPF;unicast;RTCP-mux;dest_addr=":4588"`,
			`RTP/AVPF;unicast;RTCP-mux;dest_addr="203.0.113.7:5588"`,
			[][]uint16{{4588}}, [NumTransportActions]int{TransportRewritten: 1}, 0, nil, 1},
		{"2.0 ports in any order", `RTP/AVP;unicast;dest_addr=":4601"/":4588"`,
			`RTP/AVP;unicast;dest_addr="203.0.113.7:5601"/"203.0.113.7:5602"`,
			[][]uint16{{4601, 4588}}, [NumTransportActions]int{TransportRewritten: 1}, 0, nil, 1},
		{"2.0 beside 1.0 and TCP", `RTP/AVP/UDP;unicast;dest_addr=":4588"/":4589",RTP/AVP;unicast;client_port=6000-6001,RTP/AVP/TCP;unicast;interleaved=0-1`,
			`RTP/AVP/UDP;unicast;dest_addr="203.0.113.7:5588"/"203.0.113.7:5589",RTP/AVP;unicast;client_port=7000-7001,RTP/AVP/TCP;unicast;interleaved=0-1`,
			[][]uint16{{4588, 4589}, {6000, 6001}}, [NumTransportActions]int{TransportRewritten: 2, TransportPassed: 1}, 0, nil, 3},
		{"2.0 multicast group passes byte for byte", `RTP/AVP/UDP;multicast;dest_addr="232.1.1.1:5000"/"232.1.1.1:5001";ttl=16`,
			`RTP/AVP/UDP;multicast;dest_addr="232.1.1.1:5000"/"232.1.1.1:5001";ttl=16`,
			nil, [NumTransportActions]int{TransportPassed: 1}, 0, nil, 1},
		{"2.0 multicast to a unicast host dropped", `RTP/AVP/UDP;multicast;dest_addr="198.51.100.9:5000"/"198.51.100.9:5001",RTP/AVP/TCP;interleaved=0-1`,
			"RTP/AVP/TCP;interleaved=0-1",
			nil, [NumTransportActions]int{TransportDropped: 1, TransportPassed: 1}, 0, []Problem{ProblemUnsupportedTransport}, 1},
		{"an address named twice", `RTP/AVP;unicast;dest_addr=":4588"/":4589";dest_addr="198.51.100.9:4588",RTP/AVP;unicast;client_port=4588-4589;client_port=6000-6001,RTP/AVP;destination=192.0.2.10;destination=198.51.100.9;client_port=4588-4589,RTP/AVP/TCP;interleaved=0-1`,
			"RTP/AVP/TCP;interleaved=0-1",
			nil, [NumTransportActions]int{TransportDropped: 3, TransportPassed: 1}, 0,
			[]Problem{ProblemUnsupportedTransport, ProblemUnsupportedTransport, ProblemUnsupportedTransport}, 1},
		{"2.0 RTP over its own TCP connection dropped", `RTP/AVP/TCP;unicast;dest_addr="198.51.100.9:4588";setup=active,RTP/AVP/TCP;interleaved=0-1`,
			"RTP/AVP/TCP;interleaved=0-1",
			nil, [NumTransportActions]int{TransportDropped: 1, TransportPassed: 1}, 0, []Problem{ProblemUnsupportedTransport}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls [][]uint16
			rw, err := rewriteTransport(tt.in, proxyExternal, controlClient, shiftLease(&calls))
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
	rw, err := rewriteTransport("RTP/AVP;unicast;client_port=4588-4589,RTP/AVP/TCP;interleaved=0-1", proxyExternal, controlClient, fail)
	require.NoError(t, err)
	assert.Equal(t, "RTP/AVP/TCP;interleaved=0-1", rw.value, "the spec that could not be leased is not offered")
	require.Len(t, rw.dropped, 1)
	assert.Equal(t, ProblemGroupLimit, rw.dropped[0].Problem)

	plain := func([]uint16) ([]uint16, error) { return nil, errors.New("no port") }
	rw, err = rewriteTransport("RTP/AVP;unicast;client_port=4588-4589", proxyExternal, controlClient, plain)
	require.NoError(t, err)
	assert.Zero(t, rw.kept)
	assert.Equal(t, ProblemLeaseFailed, rw.dropped[0].Problem)
}

// restoreCase is a SETUP reply's Transport and what restoreTransport
// must make of it.
type restoreCase struct {
	name      string
	in, out   string
	chosen    int
	sources   []string
	unmatched bool
}

func runRestoreCases(t *testing.T, leased []leasedSpec, tests []restoreCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, err := restoreTransport(tt.in, leased)
			require.NoError(t, err)
			assert.Equal(t, tt.out, rt.value, "byte for byte")
			assert.Equal(t, tt.chosen, rt.chosen)
			assert.Equal(t, tt.unmatched, rt.unmatched)
			var want []netip.Addr
			for _, s := range tt.sources {
				want = append(want, netip.MustParseAddr(s))
			}
			assert.Equal(t, want, rt.sources)
		})
	}
}

func TestRestoreTransport(t *testing.T) {
	leased := []leasedSpec{
		{announced: []uint16{4588, 4589}, external: []uint16{5588, 5589}, portText: "4588-4589", dest: "192.0.2.99", hasDest: true},
		{announced: []uint16{6000, 6001}, external: []uint16{7000, 7001}, portText: "6000"},
		// A firewall client's associations on ports that are not a pair.
		{announced: []uint16{8000, 8001}, external: []uint16{50881, 11382}, portText: "8000-8001"},
	}
	tests := []restoreCase{
		{"a 2.0 reply does not match a 1.0 lease", `RTP/AVP;unicast;dest_addr="203.0.113.7:5588"/"203.0.113.7:5589"`,
			`RTP/AVP;unicast;dest_addr="203.0.113.7:5588"/"203.0.113.7:5589"`, -1, nil, true},
		{"first spec", "RTP/AVP;unicast;client_port=5588-5589;server_port=30000-30001;ssrc=0BADCAFE",
			"RTP/AVP;unicast;client_port=4588-4589;server_port=30000-30001;ssrc=0BADCAFE", 0, nil, false},
		{"destination and source", "RTP/AVP;unicast;destination=203.0.113.7;source=198.51.100.20;client_port=5588-5589;server_port=30000-30001",
			"RTP/AVP;unicast;destination=192.0.2.99;source=198.51.100.20;client_port=4588-4589;server_port=30000-30001", 0, []string{"198.51.100.20"}, false},
		{"second spec, as the client wrote it", "RTP/AVP;unicast;client_port=7000-7001", "RTP/AVP;unicast;client_port=6000", 1, nil, false},
		{"TCP chosen", "RTP/AVP/TCP;unicast;interleaved=0-1", "RTP/AVP/TCP;unicast;interleaved=0-1", -1, nil, false},
		{"ports that are not a range, echoed", "RTP/AVP;unicast;client_port=50881-11382;server_port=30000-30001",
			"RTP/AVP;unicast;client_port=8000-8001;server_port=30000-30001", 2, nil, false},
		{"only the first port echoed", "RTP/AVP;unicast;client_port=5588", "RTP/AVP;unicast;client_port=4588-4589", 0, nil, false},
		{"first port leased, second not", "RTP/AVP;unicast;client_port=5588-9999", "RTP/AVP;unicast;client_port=5588-9999", -1, nil, true},
		{"ports never leased", "RTP/AVP;unicast;client_port=9000-9001", "RTP/AVP;unicast;client_port=9000-9001", -1, nil, true},
		{"source is a name", "RTP/AVP;unicast;client_port=5588-5589;source=media.example", "RTP/AVP;unicast;client_port=4588-4589;source=media.example", 0, nil, false},
	}
	runRestoreCases(t, leased, tests)
}

// TestRewriteTransportBadDestAddr: a dest_addr the filter cannot read or
// carry drops its spec, counted; what else was offered still goes.
func TestRewriteTransportBadDestAddr(t *testing.T) {
	for _, v := range []string{
		`dest_addr=:4588/:4589`,                           // not quoted
		`dest_addr=""`,                                    // empty address
		`dest_addr=`,                                      // nothing
		`dest_addr`,                                       // no value
		`dest_addr="192.0.2.10"`,                          // no port
		`dest_addr=":4588"/"192.0.2.10"`,                  // RTCP without a port
		`dest_addr="2001:db8::1:4588"`,                    // IPv6 without brackets
		`dest_addr="[2001:db8::1:4588"`,                   // unterminated bracket
		`dest_addr="[2001:db8::1]4588"`,                   // no colon after the bracket
		`dest_addr="[192.0.2.10]:4588"`,                   // IPv4 in brackets
		`dest_addr="[fe80::1%eth0]:4588"`,                 // a zone
		`dest_addr="bad host:4588"`,                       // not a host
		`dest_addr=":0"/":1"`,                             // port 0
		`dest_addr=":4588"/":70000"`,                      // not a port
		`dest_addr=":4588x"`,                              // not a number
		`dest_addr=":4588" ":4589"`,                       // no slash
		`dest_addr=":4588"/`,                              // a trailing slash
		`dest_addr=":4588"//":4589"`,                      // two slashes
		`dest_addr=":4588"/":4588"`,                       // RTP and RTCP on one port
		`dest_addr=":4588"/":4589"/":4590"`,               // more than RTP and RTCP
		`dest_addr=":1"/":2"/":3"/":4"/":5"`,              // more than maxAddrs
		`dest_addr=":4588"/":4589";client_port=4588-4589`, // both addressings
		`destination=198.51.100.9;dest_addr=":4588"`,      // both addressings
	} {
		t.Run(v, func(t *testing.T) {
			var calls [][]uint16
			rw, err := rewriteTransport("RTP/AVP;unicast;"+v+",RTP/AVP/TCP;interleaved=0-1", proxyExternal, controlClient, shiftLease(&calls))
			require.NoError(t, err)
			assert.Equal(t, "RTP/AVP/TCP;interleaved=0-1", rw.value)
			assert.Empty(t, calls, "nothing leased")
			assert.Equal(t, [NumTransportActions]int{TransportDropped: 1, TransportPassed: 1}, rw.actions)
			require.Len(t, rw.dropped, 1)
			assert.Equal(t, ProblemUnsupportedTransport, rw.dropped[0].Problem)
			assert.ErrorIs(t, rw.dropped[0], ErrAddrList)
		})
	}
}

// TestRewriteTransportIPv6External: an IPv6 external address is written
// as a bracketed literal.
func TestRewriteTransportIPv6External(t *testing.T) {
	var calls [][]uint16
	rw, err := rewriteTransport(`RTP/AVP;unicast;dest_addr="[2001:db8::10]:4588"/"[2001:db8::10]:4589"`,
		netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("2001:db8::10"), shiftLease(&calls))
	require.NoError(t, err)
	assert.Equal(t, `RTP/AVP;unicast;dest_addr="[2001:db8::7]:5588"/"[2001:db8::7]:5589"`, rw.value)
	assert.Zero(t, rw.destinations, "the client's own IPv6 address is not a third party")
	require.Len(t, rw.leased, 1)
	assert.Equal(t, `"[2001:db8::10]:4588"/"[2001:db8::10]:4589"`, rw.leased[0].destAddr)
}

func TestRestoreTransportV2(t *testing.T) {
	leased := []leasedSpec{
		{announced: []uint16{4588, 4589}, external: []uint16{5588, 5589}, destAddr: `":4588"/":4589"`, v2: true},
		{announced: []uint16{6000, 6001}, external: []uint16{7000, 7001}, destAddr: `"[2001:db8::1]:6000"/"[2001:db8::1]:6001"`, v2: true},
		{announced: []uint16{8000}, external: []uint16{9000}, destAddr: `":8000"`, v2: true},
	}
	tests := []restoreCase{
		{"echoed, with src_addr", `RTP/AVP/UDP;unicast;dest_addr="203.0.113.7:5588"/"203.0.113.7:5589";src_addr="198.51.100.20:30000"/"198.51.100.20:30001";ssrc=0BADCAFE`,
			`RTP/AVP/UDP;unicast;dest_addr=":4588"/":4589";src_addr="198.51.100.20:30000"/"198.51.100.20:30001";ssrc=0BADCAFE`, 0, []string{"198.51.100.20"}, false},
		{"ports only, RTP and RTCP from two hosts", `RTP/AVP;unicast;src_addr="[2001:db8::20]:30000"/"198.51.100.21:30001";dest_addr=":7000"/":7001"`,
			`RTP/AVP;unicast;src_addr="[2001:db8::20]:30000"/"198.51.100.21:30001";dest_addr="[2001:db8::1]:6000"/"[2001:db8::1]:6001"`, 1, []string{"2001:db8::20", "198.51.100.21"}, false},
		{"RTCP-mux, one port", `RTP/AVP;unicast;RTCP-mux;dest_addr="203.0.113.7:9000"`, `RTP/AVP;unicast;RTCP-mux;dest_addr=":8000"`, 2, nil, false},
		{"src_addr a name or no host", `RTP/AVP;unicast;dest_addr=":5588"/":5589";src_addr="media.example:30000"/":30001"`,
			`RTP/AVP;unicast;dest_addr=":4588"/":4589";src_addr="media.example:30000"/":30001"`, 0, nil, false},
		{"bad src_addr names nothing", `RTP/AVP;unicast;dest_addr=":5588"/":5589";src_addr=198.51.100.20`,
			`RTP/AVP;unicast;dest_addr=":4588"/":4589";src_addr=198.51.100.20`, 0, nil, false},
		{"ports never leased", `RTP/AVP;unicast;dest_addr=":9998"/":9999"`, `RTP/AVP;unicast;dest_addr=":9998"/":9999"`, -1, nil, true},
		{"bad dest_addr", `RTP/AVP;unicast;dest_addr=:5588/:5589`, `RTP/AVP;unicast;dest_addr=:5588/:5589`, -1, nil, true},
		{"a 1.0 reply does not match a 2.0 lease", "RTP/AVP;unicast;client_port=5588-5589", "RTP/AVP;unicast;client_port=5588-5589", -1, nil, true},
		{"TCP chosen", "RTP/AVP/TCP;unicast;interleaved=0-1", "RTP/AVP/TCP;unicast;interleaved=0-1", -1, nil, false},
	}
	runRestoreCases(t, leased, tests)
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
