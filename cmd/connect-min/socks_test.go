package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/netip"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// appendRequest encodes r as parseRequest reads it, for the round trip.
func appendRequest(b []byte, r request) []byte {
	b = append(b, socksVersion, r.cmd, 0, r.atyp)
	switch r.atyp {
	case atypIPv4:
		v := r.dst.Addr().As4()
		b = append(b, v[:]...)
	case atypIPv6:
		v := r.dst.Addr().As16()
		b = append(b, v[:]...)
	case atypDomain:
		b = append(append(b, byte(len(r.name))), r.name...)
	}
	return binary.BigEndian.AppendUint16(b, r.dst.Port())
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want request
		n    int
		err  bool
	}{
		{"IPv4", []byte{5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90, 'x'},
			request{cmd: cmdConnect, atyp: atypIPv4, dst: netip.MustParseAddrPort("127.0.0.1:8080")}, 10, false},
		{"IPv6", append(append([]byte{5, 1, 0, 4}, netip.IPv6Loopback().AsSlice()...), 0, 80),
			request{cmd: cmdConnect, atyp: atypIPv6, dst: netip.MustParseAddrPort("[::1]:80")}, 22, false},
		{"domain", append(append([]byte{5, 1, 0, 3, 7}, "example"...), 1, 0),
			request{cmd: cmdConnect, atyp: atypDomain, name: "example", dst: netip.AddrPortFrom(netip.Addr{}, 256)}, 14, false},
		{"empty domain", []byte{5, 3, 0, 3, 0, 0, 53},
			request{cmd: cmdUDPAssociate, atyp: atypDomain, dst: netip.AddrPortFrom(netip.Addr{}, 53)}, 7, false},
		{"BIND", []byte{5, 2, 0, 1, 0, 0, 0, 0, 0, 0},
			request{cmd: cmdBind, atyp: atypIPv4, dst: netip.AddrPortFrom(netip.IPv4Unspecified(), 0)}, 10, false},
		{"reserved octet set: ignored (the fuzzer's first find)", []byte{5, 1, 0x30, 1, 127, 0, 0, 1, 0, 80},
			request{cmd: cmdConnect, atyp: atypIPv4, dst: netip.MustParseAddrPort("127.0.0.1:80")}, 10, false},
		{"short header", []byte{5, 1, 0, 1}, request{}, 0, true},
		{"short IPv4", []byte{5, 1, 0, 1, 127, 0, 0, 1, 0}, request{}, 0, true},
		{"short domain", []byte{5, 1, 0, 3, 200, 'a'}, request{}, 0, true},
		{"version 4", []byte{4, 1, 0, 1, 127, 0, 0, 1, 0, 80}, request{}, 0, true},
		{"unknown address type", []byte{5, 1, 0, 2, 127, 0, 0, 1, 0, 80}, request{}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, n, err := parseRequest(tt.in)
			if tt.err {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, r)
			assert.Equal(t, tt.n, n)
		})
	}
}

func TestAppendReply(t *testing.T) {
	tests := []struct {
		name  string
		rep   byte
		bound netip.AddrPort
		want  []byte
	}{
		{"IPv4", repSucceeded, netip.MustParseAddrPort("127.0.0.1:4660"), []byte{5, 0, 0, 1, 127, 0, 0, 1, 0x12, 0x34}},
		{"IPv4 in IPv6", repSucceeded, netip.MustParseAddrPort("[::ffff:127.0.0.1]:1"), []byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 1}},
		{"IPv6", repSucceeded, netip.MustParseAddrPort("[::1]:2"), append(append([]byte{5, 0, 0, 4}, netip.IPv6Loopback().AsSlice()...), 0, 2)},
		{"failure", repConnectionRefused, netip.AddrPort{}, []byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, appendReply(nil, tt.rep, tt.bound), tt.name)
	}
}

// FuzzParseRequest: no panic, a length within the input that agrees with
// requestLen, and an accepted request encodes back to the bytes it came
// from, RSV aside.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte{5, 1, 0, 1, 127, 0, 0, 1, 0, 80})
	f.Add(append(append([]byte{5, 1, 0, 4}, netip.IPv6Loopback().AsSlice()...), 0, 80))
	f.Add(append(append([]byte{5, 1, 0, 3, 7}, "example"...), 0, 80))
	f.Add([]byte{5, 1, 0, 3, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := parseRequest(b)
		if err != nil {
			return
		}
		require.LessOrEqual(t, n, len(b))
		want, ok := requestLen([5]byte(b))
		require.True(t, ok)
		require.Equal(t, want, n)
		// RSV is not checked (as most servers do not): it comes back as 0.
		sent := append([]byte(nil), b[:n]...)
		sent[2] = 0
		require.Equal(t, sent, appendRequest(nil, r))
	})
}

// oneByteConn hands the handshake its input a byte per read, as a slow
// client's segments would, and keeps what it writes.
type oneByteConn struct {
	r io.Reader
	w bytes.Buffer
}

func (c *oneByteConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *oneByteConn) Write(b []byte) (int, error) { return c.w.Write(b) }

func TestHandshakeReads(t *testing.T) {
	connect := []byte{5, 1, 0, 1, 127, 0, 0, 1, 0, 80}
	tests := []struct {
		name      string
		in        []byte
		oneByte   bool
		wantDst   string
		wantEarly string
		wantOut   []byte
		fails     bool
	}{
		{"greeting and request apart", append([]byte{5, 1, 0}, connect...), true, "127.0.0.1:80", "", []byte{5, 0}, false},
		{"all at once, data after the request", append(append([]byte{5, 2, 2, 0}, connect...), "early"...), false, "127.0.0.1:80", "early", []byte{5, 0}, false},
		{"data after the request, a byte a read", append(append([]byte{5, 1, 0}, connect...), 'x'), true, "127.0.0.1:80", "", []byte{5, 0}, false},
		{"the end in the request", []byte{5, 1, 0, 5, 1, 0}, true, "", "", []byte{5, 0}, true},
		{"the end in the greeting", []byte{5, 3, 0}, false, "", "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r io.Reader = bytes.NewReader(tt.in)
			if tt.oneByte {
				r = iotest.OneByteReader(r)
			}
			c := &oneByteConn{r: r}
			dst, early, err := handshake(c, make([]byte, handshakeBufLen))
			assert.Equal(t, tt.wantOut, c.w.Bytes())
			if tt.fails {
				assert.ErrorIs(t, err, io.EOF)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantDst, dst.String())
			// A byte a read: the request's last read ends at its last byte.
			assert.Equal(t, tt.wantEarly, string(early))
		})
	}
}
