package rtspfilter

import (
	"bufio"
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Seeds come from the table tests' inputs; what the fuzzer finds is kept
// in testdata/fuzz/<Target> (make fuzz) and replayed by every go test.

var transportSeeds = []string{
	"RTP/AVP;unicast;client_port=4588-4589",
	"RTP/AVP/UDP;unicast;client_port=4588;mode=\"PLAY\"",
	"RTP/AVP;unicast;destination=192.0.2.99;client_port=4588-4589",
	"RTP/AVP;unicast;client_port=4588-4589, RTP/AVP/TCP;unicast;interleaved=0-1 ,RTP/AVP;multicast;destination=232.1.1.1",
	"x-real-rdt/udp;client_port=6970,RTP/AVP;unicast;client_port=0-1,RTP/AVP;unicast,RTP/AVP/TCP;interleaved=0-1",
	`RTP/AVP;unicast;dest_addr=":4588"/":4589"`,
	`RTP/AVP;unicast;client_port=4588-4589;x-note="a,b;c"`,
	"RTP/SAVPF;unicast;client_port=65534-65535;destination",
	"RTP/AVP;unicast;client_port=65535",
	// RTSP 2.0 (RFC 7826 §18.54).
	`RTP/AVP/UDP;unicast;dest_addr="192.0.2.10:4588"/"192.0.2.10:4589";mode="PLAY"`,
	`RTP/AVP;unicast;dest_addr="[2001:db8::1]:4588"/"[2001:db8::1]:4589",RTP/AVP/TCP;unicast;interleaved=0-1`,
	`RTP/AVPF;unicast;RTCP-mux;dest_addr="media.example:4588"`,
	`RTP/AVP/UDP;multicast;dest_addr="232.1.1.1:5000"/"232.1.1.1:5001";ttl=16`,
	`RTP/AVP/TCP;unicast;dest_addr=":4588";setup=active`,
	`RTP/AVP;unicast;dest_addr=":4588"/":4589";client_port=4588-4589`,
	`RTP/AVP;unicast;dest_addr=":4588"/":4589";DEST_ADDR="198.51.100.9:4588"`,
	`RTP/AVP/UDP;unicast;dest_addr="203.0.113.7:5588"/"203.0.113.7:5589";src_addr="198.51.100.20:30000"/"[2001:db8::20]:30001"`,
}

func FuzzReadHead(f *testing.F) {
	f.Add([]byte(clientStream))
	f.Add([]byte(serverStream))
	f.Add([]byte("RTSP/1.0 200 OK\r\nTransport: RTP/AVP;unicast;\r\n client_port=4000-4001\r\nCSeq: 9\r\n\r\n"))
	f.Add([]byte("RTSP/1.0 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := readHead(bufio.NewReaderSize(bytes.NewReader(b), readBufSize), nil)
		require.LessOrEqual(t, len(h.raw), MaxHeadBytes+readBufSize)
		require.True(t, bytes.HasPrefix(b, h.raw), "raw is what was read")
		if err != nil {
			return
		}
		require.LessOrEqual(t, len(h.fields), MaxHeaders)
		require.GreaterOrEqual(t, h.bodyLen, int64(0))
		for _, fl := range h.fields {
			require.True(t, 0 < fl.start && fl.start < fl.end && fl.end <= len(h.raw))
		}
		again, err := parseHead(h.raw)
		require.NoError(t, err, "a head that read parses alone")
		require.Equal(t, h.fields, again.fields)
		require.Equal(t, string(h.raw), string(appendHeadWith(nil, &h, nil)), "no replacement, the same bytes")
		if len(h.fields) > 0 {
			// Written again with its own value (as a rewrite does, in
			// the canonical "Name: value" form), the head still parses
			// to the same fields.
			out := appendHeadWith(nil, &h, []replacement{{index: 0, value: h.fields[0].value}})
			re, err := parseHead(out)
			require.NoError(t, err, "a rewritten head parses: %q", out)
			require.Len(t, re.fields, len(h.fields))
			require.Equal(t, h.fields[0].value, re.fields[0].value)
			require.Equal(t, h.bodyLen, re.bodyLen)
		}
	})
}

func FuzzParseTransport(f *testing.F) {
	for _, s := range transportSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		specs, err := parseTransport(v)
		if err != nil {
			return
		}
		require.LessOrEqual(t, len(specs), MaxTransportSpecs)
		out := string(appendTransport(nil, specs))
		again, err := parseTransport(out)
		require.NoError(t, err, "parse(append(parse(x))) for %q", out)
		require.Len(t, again, len(specs))
		for i := range specs {
			require.Equal(t, specs[i].kind(), again[i].kind())
			require.Equal(t, specs[i].params, again[i].params)
		}
	})
}

// FuzzRewriteTransport checks the filter's promise: whatever the client
// writes, no UDP spec reaches the server naming a port the proxy did not
// lease, nor a destination other than the proxy.
func FuzzRewriteTransport(f *testing.F) {
	for _, s := range transportSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		var calls [][]uint16
		rw, err := rewriteTransport(v, proxyExternal, controlClient, shiftLease(&calls))
		if err != nil {
			return
		}
		require.Len(t, rw.leased, len(calls))
		require.Equal(t, rw.actions[TransportRewritten], len(calls))
		if rw.kept == 0 {
			return
		}
		out, err := parseTransport(rw.value)
		require.NoError(t, err, "the rewrite parses: %q", rw.value)
		require.Len(t, out, rw.kept)
		leased := map[string]bool{}
		for _, l := range rw.leased {
			leased[formatPorts(l.external)] = true
		}
		for _, s := range out {
			switch s.kind() {
			case kindUDP:
				require.False(t, s.count("client_port") > 1 || s.count("destination") > 1 || s.count("dest_addr") > 1, "%q: an address twice", s.raw)
				if d, ok := s.get("dest_addr"); ok {
					require.False(t, s.has("client_port") || s.has("destination"), "%q: two addressings", s.raw)
					addrs, err := parseAddrList(d.value)
					require.NoError(t, err, "%q", d.value)
					ports, ok := addrPorts(addrs)
					require.True(t, ok)
					require.True(t, leased[formatPorts(ports)], "dest_addr %q was leased", d.value)
					for _, a := range addrs {
						ip, ok := a.ip()
						require.True(t, ok && ip == proxyExternal, "dest_addr %q names the proxy only", d.value)
					}
					break
				}
				cp, ok := s.get("client_port")
				require.True(t, ok)
				require.True(t, leased[cp.value], "client_port %q was leased", cp.value)
				if d, ok := s.get("destination"); ok {
					require.Equal(t, proxyExternal.String(), d.value)
				}
			case kindMulticast:
				// Only multicast groups, never a host.
				require.NoError(t, multicastOnly(&s), "%q", s.raw)
			case kindTCP:
				require.True(t, !s.has("dest_addr") || s.has("interleaved"), "%q: RTP over a TCP connection to an address", s.raw)
			case kindUnsupported:
				require.False(t, s.has("client_port") || s.has("destination") || s.has("dest_addr"), "%q reaches the server", s.raw)
			}
		}
		back, err := restoreTransport(rw.value, rw.leased)
		require.NoError(t, err)
		require.False(t, back.unmatched)
	})
}

// FuzzRelay runs arbitrary bytes through both directions of a connection:
// no panic, no hang, and what has nothing to rewrite passes byte for byte.
func FuzzRelay(f *testing.F) {
	f.Add([]byte(clientStream), []byte(serverStream))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"), []byte("$\x00\x00"))
	f.Add([]byte("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 4\r\n\r\nabcd$\x01\x00\x02hi"), []byte("RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"))
	f.Add([]byte("SETUP rtsp://h/s RTSP/1.0\r\nCSeq: 5\r\nTransport: "+strings.Repeat("RTP/AVP;client_port=40000-40001,", 20)+"\r\n\r\n"), []byte(""))
	flt, _ := segEnv(f)
	f.Fuzz(func(t *testing.T, client, server []byte) {
		c := flt.NewConnection(segInfo())
		var toServer, toClient bytes.Buffer
		done := make(chan error, 1)
		// The server side ends at once (an empty stream), so that an
		// answer of the proxy's own never waits for a reply that will
		// not come.
		go func() { done <- c.ServerToClient(context.Background(), &toClient, strings.NewReader("")) }()
		cerr := c.ClientToServer(context.Background(), &toServer, bytes.NewReader(client))
		require.NoError(t, <-done)
		c.Close()
		if cerr == nil && !bytes.Contains(client, []byte("SETUP")) {
			require.Equal(t, string(client), toServer.String(), "nothing to rewrite: byte for byte")
		}

		c = flt.NewConnection(segInfo())
		toClient.Reset()
		require.NoError(t, c.ServerToClient(context.Background(), &toClient, bytes.NewReader(server)))
		c.Close()
		require.Equal(t, string(server), toClient.String(), "no SETUP pending: the server's bytes pass as they are")
	})
}
