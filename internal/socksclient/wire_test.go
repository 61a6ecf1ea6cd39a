package socksclient

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAppendAddr(t *testing.T) {
	tests := []struct {
		name    string
		a       Addr
		want    []byte
		wantErr bool
	}{
		{"IPv4", AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:1755")), []byte{1, 127, 0, 0, 1, 0x06, 0xdb}, false},
		{"IPv4 mapped into IPv6 goes as IPv4", AddrFromAddrPort(netip.MustParseAddrPort("[::ffff:192.0.2.1]:80")), []byte{1, 192, 0, 2, 1, 0, 80}, false},
		{"IPv6", AddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::1]:80")),
			append(append([]byte{4}, netip.MustParseAddr("2001:db8::1").AsSlice()...), 0, 80), false},
		{"domain", Addr{Name: "media.test", Port: 1755}, append(append([]byte{3, 10}, "media.test"...), 0x06, 0xdb), false},
		{"domain too long", Addr{Name: string(bytes.Repeat([]byte{'a'}, 256)), Port: 1}, nil, true},
		{"no address", Addr{Port: 1}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AppendAddr(nil, tt.a)
			if tt.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			back, n, err := parseAddr(got, true)
			require.NoError(t, err)
			assert.Equal(t, len(got), n)
			want := tt.a
			want.IP = want.IP.Unmap()
			assert.Equal(t, want, back, "round trip")
		})
	}
}

func TestReadReply(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		want     Addr
		wantCode Reply // when the reply is a refusal
		wantErr  bool
	}{
		{"IPv4", []byte{5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38}, AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:1080")), 0, false},
		{"IPv6", append(append([]byte{5, 0, 0, 4}, netip.IPv6Loopback().AsSlice()...), 0, 80), AddrFromAddrPort(netip.MustParseAddrPort("[::1]:80")), 0, false},
		{"domain", append(append([]byte{5, 0, 0, 3, 5}, "relay"...), 0, 7), Addr{Name: "relay", Port: 7}, 0, false},
		{"refused, reply read whole", []byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}, AddrFromAddrPort(netip.MustParseAddrPort("0.0.0.0:0")), ReplyConnectionRefused, true},
		{"not allowed", []byte{5, 2, 0, 1, 0, 0, 0, 0, 0, 0}, AddrFromAddrPort(netip.MustParseAddrPort("0.0.0.0:0")), ReplyNotAllowed, true},
		{"wrong version", []byte{4, 0, 0, 1, 127, 0, 0, 1, 0, 80}, Addr{}, 0, true},
		{"unknown address type", []byte{5, 0, 0, 9, 0, 0, 0}, Addr{}, 0, true},
		{"empty domain", []byte{5, 0, 0, 3, 0, 0, 7}, Addr{}, 0, true},
		{"truncated", []byte{5, 0, 0, 1, 127}, Addr{}, 0, true},
		{"empty", nil, Addr{}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The stream goes on after the reply: none of it may be read.
			in := tt.in
			if !tt.wantErr || tt.wantCode != 0 {
				in = append(append([]byte{}, in...), "stream"...)
			}
			r := bytes.NewReader(in)
			got, err := ReadReply(r, CmdConnect)
			var re *ReplyError
			switch {
			case tt.wantCode != 0:
				require.ErrorAs(t, err, &re)
				assert.Equal(t, tt.wantCode, re.Code)
				assert.Equal(t, CmdConnect, re.Command)
				assert.Contains(t, err.Error(), tt.wantCode.String())
			case tt.wantErr:
				require.Error(t, err)
				assert.False(t, errors.As(err, &re), "a malformed reply is not a refusal")
				return
			default:
				require.NoError(t, err)
			}
			assert.Equal(t, tt.want, got)
			rest, _ := io.ReadAll(r)
			assert.Equal(t, "stream", string(rest), "ReadReply reads the reply only")
		})
	}
}

func TestParseUDPHeader(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		from    Addr
		n       int
		wantErr bool
	}{
		{"IPv4", []byte{0, 0, 0, 1, 127, 0, 0, 1, 0x06, 0xdb, 'x'}, AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:1755")), 10, false},
		{"IPv6", append([]byte{0, 0, 0, 4}, append(netip.MustParseAddr("::1").AsSlice(), 0, 80)...), AddrFromAddrPort(netip.MustParseAddrPort("[::1]:80")), 22, false},
		{"domain keeps the port, not the name", []byte{0, 0, 0, 3, 1, 'h', 0, 80}, Addr{Port: 80}, 8, false},
		{"fragment", []byte{0, 0, 1, 1, 127, 0, 0, 1, 0, 80}, Addr{}, 0, true},
		{"reserved not zero", []byte{0, 1, 0, 1, 127, 0, 0, 1, 0, 80}, Addr{}, 0, true},
		{"short", []byte{0, 0, 0}, Addr{}, 0, true},
		{"short IPv4", []byte{0, 0, 0, 1, 127, 0}, Addr{}, 0, true},
		{"short domain", []byte{0, 0, 0, 3, 9, 'h'}, Addr{}, 0, true},
		{"unknown type", []byte{0, 0, 0, 9, 0, 0}, Addr{}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from, n, err := ParseUDPHeader(tt.b)
			if tt.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.from, from)
			assert.Equal(t, tt.n, n)
		})
	}
}

// TestUDPHeaderDoesNotAllocate: the benchmark's datagram loops call these
// per datagram.
func TestUDPHeaderDoesNotAllocate(t *testing.T) {
	dst := AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:9"))
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		b, _ := AppendUDPHeader(buf[:0], dst)
		b = append(b, "payload"...)
		if _, _, err := ParseUDPHeader(b); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs)
	assert.Equal(t, UDPHeaderLen(dst), 10)
}

// FuzzParseUDPHeader: no input panics; an accepted header fits b, and one
// naming an IP address re-encodes to the bytes it was parsed from.
func FuzzParseUDPHeader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 127, 0, 0, 1, 0, 80, 'x'})
	f.Add([]byte{0, 0, 0, 3, 1, 'h', 0, 80})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, n, err := ParseUDPHeader(b)
		if err != nil {
			return
		}
		if n < 4 || n > len(b) {
			t.Fatalf("header length %d of %d bytes", n, len(b))
		}
		if b[3] == atypDomain {
			return
		}
		re, err := AppendUDPHeader(nil, a)
		if err != nil {
			t.Fatalf("re-encode %v: %v", a, err)
		}
		// An IPv4-mapped IPv6 address comes back as IPv4.
		if b[3] == atypIPv6 && a.IP.Is4() {
			return
		}
		if !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoded %x, parsed %x", re, b[:n])
		}
	})
}

// FuzzReadReply: no input panics or reads past the reply; an accepted
// reply is at most the longest one.
func FuzzReadReply(f *testing.F) {
	f.Add([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38})
	f.Add([]byte{5, 1, 0, 3, 2, 'a', 'b', 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		_, err := ReadReply(r, CmdUDPAssociate)
		var re *ReplyError
		if err != nil && !errors.As(err, &re) {
			return
		}
		used := len(b) - r.Len()
		if used > 4+maxAddrLen-1 {
			t.Fatalf("read %d bytes", used)
		}
	})
}
