package mmsfilter

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// layoutFunnelPacket writes a ConnectFunnel packet field by field from the
// tables of PROTOCOL.md §1.1 and §2.2 and the length rules of §1.2 —
// deliberately not through AppendCommand, so the golden tests check the
// builders as well as the rewrite. tail is the funnel name plus whatever
// follows it before the zero padding.
func layoutFunnelPacket(seq uint16, maxBitRate uint32, tail []byte) []byte {
	msgLen := (28 + len(tail) + 7) / 8 * 8 // chunkLen+MID+5 fields, name…, padded to 8
	total := 32 + msgLen
	var b []byte
	b = append(b, 0x01, 0x00, 0x00, 0x00)                         // 0 rep, version, versionMinor, padding
	b = append(b, 0xCE, 0xFA, 0x0B, 0xB0)                         // 4 sessionId
	b = binary.LittleEndian.AppendUint32(b, uint32(total-16))     // 8 messageLength
	b = append(b, 'M', 'M', 'S', ' ')                             // 12 seal
	b = binary.LittleEndian.AppendUint32(b, uint32((total-16)/8)) // 16 chunkCount
	b = binary.LittleEndian.AppendUint16(b, seq)                  // 20 seq
	b = append(b, 0, 0)                                           // 22 MBZ
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)                         // 24 timeSent
	b = binary.LittleEndian.AppendUint32(b, uint32(msgLen/8))     // 32 chunkLen
	b = binary.LittleEndian.AppendUint32(b, 0x00030002)           // 36 MID
	b = binary.LittleEndian.AppendUint32(b, 0)                    // 40 playIncarnation
	b = binary.LittleEndian.AppendUint32(b, 0xFFFFFFFF)           // 44 maxBlockBytes
	b = binary.LittleEndian.AppendUint32(b, 0)                    // 48 maxFunnelBytes
	b = binary.LittleEndian.AppendUint32(b, maxBitRate)           // 52 maxBitRate
	b = binary.LittleEndian.AppendUint32(b, 2)                    // 56 funnelMode
	b = append(b, tail...)                                        // 60 funnelName…
	for len(b) < total {
		b = append(b, 0)
	}
	return b
}

func utf16(s string) []byte { return appendUTF16(nil, s) }

// lengths are the three length fields and the total of a one-message packet.
type lengths struct{ total, messageLength, chunkCount, chunkLen int }

func lengthsOf(b []byte) lengths {
	return lengths{
		total:         len(b),
		messageLength: int(binary.LittleEndian.Uint32(b[8:])),
		chunkCount:    int(binary.LittleEndian.Uint32(b[16:])),
		chunkLen:      int(binary.LittleEndian.Uint32(b[32:])),
	}
}

// funnelGoldenCases are funnels as real players build them (§2.2, §5),
// with every length worked out by hand from §1.2.
func funnelGoldenCases() []struct {
	name       string
	comment    string
	seq        uint16
	maxBitRate uint32
	text       string // funnel name as sent
	trailer    []byte // bytes after it, before padding
	to         netip.AddrPort
	announced  Funnel
	in         lengths
	wantText   string // funnel name after the rewrite
	out        lengths
} {
	v4 := netip.MustParseAddr
	return []struct {
		name       string
		comment    string
		seq        uint16
		maxBitRate uint32
		text       string
		trailer    []byte
		to         netip.AddrPort
		announced  Funnel
		in         lengths
		wantText   string
		out        lengths
	}{
		{
			name:       "vlc_ipv4_same_length",
			comment:    "VLC mmsu:// worked example of PROTOCOL.md §1.2: 23 chars + NUL + '0' = 50 bytes, 112 bytes total",
			seq:        1,
			maxBitRate: 0x000A0000,
			text:       `\\192.168.1.10\UDP\7000`,
			trailer:    vlcTrailer,
			to:         netip.MustParseAddrPort("203.0.113.7:40000"),
			announced:  Funnel{v4("192.168.1.10"), TransportUDP, 7000},
			in:         lengths{112, 96, 12, 10},
			wantText:   `\\203.0.113.7\UDP\40000`,
			out:        lengths{112, 96, 12, 10},
		},
		{
			name:       "vlc_ipv4_shorter",
			comment:    "VLC funnel rewritten to a 4 characters shorter name: one chunk less",
			seq:        1,
			maxBitRate: 0x000A0000,
			text:       `\\192.168.1.10\UDP\7000`,
			trailer:    vlcTrailer,
			to:         netip.MustParseAddrPort("10.0.0.1:1234"),
			announced:  Funnel{v4("192.168.1.10"), TransportUDP, 7000},
			in:         lengths{112, 96, 12, 10},
			wantText:   `\\10.0.0.1\UDP\1234`,
			out:        lengths{104, 88, 11, 9},
		},
		{
			name:       "vlc_ipv4_longer",
			comment:    "VLC funnel rewritten to the longest IPv4 name but one: one chunk more",
			seq:        1,
			maxBitRate: 0x000A0000,
			text:       `\\192.168.1.10\UDP\7000`,
			trailer:    vlcTrailer,
			to:         netip.MustParseAddrPort("203.0.113.254:65535"),
			announced:  Funnel{v4("192.168.1.10"), TransportUDP, 7000},
			in:         lengths{112, 96, 12, 10},
			wantText:   `\\203.0.113.254\UDP\65535`,
			out:        lengths{120, 104, 13, 11},
		},
		{
			name:       "vlc_ipv6_announced",
			comment:    "VLC over IPv6 announces its local IPv6 address (§5); the proxy answers with IPv4",
			seq:        1,
			maxBitRate: 0x000A0000,
			text:       `\\2001:db8:0:1:2c0:4fff:fe8a:1b2c\UDP\7000`,
			trailer:    vlcTrailer,
			to:         netip.MustParseAddrPort("203.0.113.7:40000"),
			announced:  Funnel{v4("2001:db8:0:1:2c0:4fff:fe8a:1b2c"), TransportUDP, 7000},
			in:         lengths{152, 136, 17, 15},
			wantText:   `\\203.0.113.7\UDP\40000`,
			out:        lengths{120, 104, 13, 11},
		},
		{
			name:       "ipv6_bracketed",
			comment:    "RFC 3986 bracketed IPv6 ([MS-MMSP] §2.2.4.18) rewritten to IPv6: brackets kept",
			seq:        2,
			maxBitRate: 0x00989680,
			text:       `\\[fd00::17]\UDP\5004`,
			trailer:    []byte{0, 0},
			to:         netip.MustParseAddrPort("[2001:db8::ab:cd]:41000"),
			announced:  Funnel{v4("fd00::17"), TransportUDP, 5004},
			in:         lengths{104, 88, 11, 9},
			wantText:   `\\[2001:db8::ab:cd]\UDP\41000`,
			out:        lengths{120, 104, 13, 11},
		},
		{
			name:       "no_nul",
			comment:    "no NUL: the spec does not require one; a 22-char name fills its last chunk exactly",
			seq:        1,
			maxBitRate: 0x00989680,
			text:       `\\10.11.22.33\UDP\7000`,
			to:         netip.MustParseAddrPort("203.0.113.7:40000"),
			announced:  Funnel{v4("10.11.22.33"), TransportUDP, 7000},
			in:         lengths{104, 88, 11, 9},
			wantText:   `\\203.0.113.7\UDP\40000`,
			out:        lengths{112, 96, 12, 10},
		},
		{
			name:       "long_trailer",
			comment:    "NUL then 46 bytes of non-zero trailer: kept byte for byte after the new name",
			seq:        1,
			maxBitRate: 0x00989680,
			text:       `\\192.168.1.10\UDP\7000`,
			trailer:    append([]byte{0, 0}, utf16("WMP trailer bytes, kept")...),
			to:         netip.MustParseAddrPort("10.0.0.1:1234"),
			announced:  Funnel{v4("192.168.1.10"), TransportUDP, 7000},
			in:         lengths{160, 144, 18, 16},
			wantText:   `\\10.0.0.1\UDP\1234`,
			out:        lengths{152, 136, 17, 15},
		},
		{
			name:       "tcp_passthrough",
			comment:    "libmms/FFmpeg fixed fake TCP funnel (§2.2): passes unchanged",
			seq:        1,
			maxBitRate: 0x00989680,
			text:       `\\192.168.0.129\TCP\1037`,
			trailer:    []byte{0, 0},
			to:         netip.MustParseAddrPort("203.0.113.7:40000"),
			announced:  Funnel{v4("192.168.0.129"), TransportTCP, 1037},
			in:         lengths{112, 96, 12, 10},
			wantText:   `\\192.168.0.129\TCP\1037`,
			out:        lengths{112, 96, 12, 10},
		},
		{
			name:       "lowercase_udp",
			comment:    "lowercase transport: parsed case-insensitively, written back as sent",
			seq:        1,
			maxBitRate: 0x00989680,
			text:       `\\192.168.1.10\udp\7000`,
			trailer:    []byte{0, 0},
			to:         netip.MustParseAddrPort("203.0.113.7:40000"),
			announced:  Funnel{v4("192.168.1.10"), TransportUDP, 7000},
			in:         lengths{112, 96, 12, 10},
			wantText:   `\\203.0.113.7\udp\40000`,
			out:        lengths{112, 96, 12, 10},
		},
		{
			name:       "nul_zero_padding",
			comment:    "spec-style client: NUL and zero padding only; port 1755 rewritten to a 5-digit port",
			seq:        1,
			maxBitRate: 0x00989680,
			text:       `\\172.16.5.20\UDP\1755`,
			trailer:    []byte{0, 0},
			to:         netip.MustParseAddrPort("198.51.100.200:61000"),
			announced:  Funnel{v4("172.16.5.20"), TransportUDP, 1755},
			in:         lengths{112, 96, 12, 10},
			wantText:   `\\198.51.100.200\UDP\61000`,
			out:        lengths{120, 104, 13, 11},
		},
	}
}

func TestFunnelGolden(t *testing.T) {
	for _, tc := range funnelGoldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			in := layoutFunnelPacket(tc.seq, tc.maxBitRate, append(utf16(tc.text), tc.trailer...))
			require.Equal(t, tc.in, lengthsOf(in), "input lengths")
			require.Equal(t, tc.in.total-16, tc.in.messageLength, "§1.2 messageLength = total-16")
			require.Equal(t, tc.in.messageLength/8, tc.in.chunkCount, "§1.2 chunkCount = messageLength/8")
			require.Equal(t, (tc.in.total-32)/8, tc.in.chunkLen, "§1.2 total = 32 + 8*chunkLen")

			// The package's own builder produces the same bytes.
			built := AppendCommand(nil, tc.seq, Message{MID: MIDConnectFunnel,
				Body: body{}.u32(0, 0xFFFFFFFF, 0, tc.maxBitRate, 2).raw(utf16(tc.text)...).raw(tc.trailer...)})
			require.Equal(t, in, built, "AppendCommand vs documented layout")
			golden(t, tc.name+".in.hex", tc.comment+"\ninput", in)

			out, announced, err := RewriteFunnel(nil, in, tc.to)
			require.NoError(t, err)
			assert.Equal(t, tc.announced, announced)
			require.Equal(t, tc.out, lengthsOf(out), "output lengths")

			// What trails the old name (NUL, trailer, old padding) is kept,
			// then zero padding: the expected output by the same layout.
			oldTail := in[60+2*len(tc.text):]
			want := layoutFunnelPacket(tc.seq, tc.maxBitRate, append(utf16(tc.wantText), oldTail...))
			require.Equal(t, want, out, "output vs documented layout")

			// The netfilter helper's formula gives the same chunkLen (§6).
			nl, tr := len(tc.wantText), len(oldTail)
			if tc.announced.Transport == TransportUDP {
				assert.Equal(t, 3+(2*nl+tr+11)/8, tc.out.chunkLen, "nf_nat_mms chunkLen")
				assert.Zero(t, (8-(2*nl+tr+4)%8)%8-(len(out)-60-2*nl-tr), "nf_nat_mms padding")
			}

			// seq and everything outside the length fields and the name stay.
			assert.Equal(t, in[:8], out[:8])
			assert.Equal(t, in[12:16], out[12:16])
			assert.Equal(t, in[20:32], out[20:32], "seq, MBZ, timeSent")
			assert.Equal(t, in[36:60], out[36:60], "MID and funnel fields")

			p, n, err := ParsePacket(out)
			require.NoError(t, err)
			require.Equal(t, len(out), n)
			m, _, err := ParseMessage(p.Messages)
			require.NoError(t, err)
			f, err := ParseFunnel(m)
			require.NoError(t, err)
			if tc.announced.Transport == TransportUDP {
				assert.Equal(t, Funnel{tc.to.Addr(), TransportUDP, tc.to.Port()}, f)
			} else {
				assert.Equal(t, in, out)
			}
			golden(t, tc.name+".out.hex", tc.comment+"\noutput, rewritten to "+tc.to.String(), out)
		})
	}
}

func TestParseFunnelName(t *testing.T) {
	v := netip.MustParseAddr
	good := []struct {
		name string
		in   []byte
		want Funnel
		n    int
	}{
		{"vlc", append(utf16(`\\192.168.1.10\UDP\7000`), vlcTrailer...), Funnel{v("192.168.1.10"), TransportUDP, 7000}, 46},
		{"no nul", utf16(`\\10.0.0.1\UDP\1`), Funnel{v("10.0.0.1"), TransportUDP, 1}, 32},
		{"odd byte after text", append(utf16(`\\10.0.0.1\UDP\1`), 'x'), Funnel{v("10.0.0.1"), TransportUDP, 1}, 32},
		{"lower udp", utf16(`\\10.0.0.1\udp\7000`), Funnel{v("10.0.0.1"), TransportUDP, 7000}, 38},
		{"mixed tcp", utf16(`\\10.0.0.1\tCp\1037`), Funnel{v("10.0.0.1"), TransportTCP, 1037}, 38},
		{"ipv6 bare", utf16(`\\::1\UDP\65535`), Funnel{v("::1"), TransportUDP, 65535}, 30},
		{"ipv6 bracketed", utf16(`\\[2001:db8::1]\UDP\7000`), Funnel{v("2001:db8::1"), TransportUDP, 7000}, 48},
		{"ipv6 zone", utf16(`\\fe80::1%eth0\UDP\7000`), Funnel{v("fe80::1%eth0"), TransportUDP, 7000}, 46},
		{"v4-mapped", utf16(`\\::ffff:10.0.0.1\UDP\7000`), Funnel{v("::ffff:10.0.0.1"), TransportUDP, 7000}, 52},
		{"leading zero port", utf16(`\\10.0.0.1\UDP\07000`), Funnel{v("10.0.0.1"), TransportUDP, 7000}, 40},
		{"junk after nul", append(utf16(`\\10.0.0.1\UDP\7000`), 0, 0, 0xFF, 0xFF, 1), Funnel{v("10.0.0.1"), TransportUDP, 7000}, 38},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			f, n, err := ParseFunnelName(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, f)
			assert.Equal(t, tc.n, n)
		})
	}

	bad := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrFunnelSyntax},
		{"nul first", []byte{0, 0, '\\', 0}, ErrFunnelSyntax},
		{"one backslash", utf16(`\192.168.1.1\UDP\7000`), ErrFunnelSyntax},
		{"no address", utf16(`\\\UDP\7000`), ErrFunnelSyntax},
		{"no separators", utf16(`\\192.168.1.1`), ErrFunnelSyntax},
		{"no port separator", utf16(`\\192.168.1.1\UDP`), ErrFunnelSyntax},
		{"long transport", utf16(`\\192.168.1.1\UDPX\7000`), ErrFunnelSyntax},
		{"other transport", utf16(`\\192.168.1.1\SCT\7000`), ErrFunnelSyntax},
		{"empty port", utf16(`\\192.168.1.1\UDP\`), ErrFunnelPort},
		{"port 0", utf16(`\\192.168.1.1\UDP\0`), ErrFunnelPort},
		{"port 65536", utf16(`\\192.168.1.1\UDP\65536`), ErrFunnelPort},
		{"six digits", utf16(`\\192.168.1.1\UDP\123456`), ErrFunnelPort},
		{"port letters", utf16(`\\192.168.1.1\UDP\70a`), ErrFunnelPort},
		{"trailing space", utf16(`\\192.168.1.1\UDP\7000 `), ErrFunnelPort},
		{"extra field", utf16(`\\192.168.1.1\UDP\7000\x`), ErrFunnelPort},
		{"host name", utf16(`\\media.example\UDP\7000`), ErrFunnelAddr},
		{"bracketed v4", utf16(`\\[1.2.3.4]\UDP\7000`), ErrFunnelAddr},
		{"unclosed bracket", utf16(`\\[fe80::1\UDP\7000`), ErrFunnelAddr},
		{"lone bracket", utf16(`\\[\UDP\7000`), ErrFunnelAddr},
		{"v4 leading zeros", utf16(`\\192.168.001.010\UDP\7000`), ErrFunnelAddr},
		// netfilter read only the low byte: U+0130 would have been '0' and
		// U+0100 a NUL.
		{"non-ascii unit", append(utf16(`\\10.0.0.1\UDP\70`), 0x30, 0x01), ErrFunnelSyntax},
		{"zero low byte", append(utf16(`\\10.0.0.1\UDP\70`), 0x00, 0x01), ErrFunnelSyntax},
		{"too long", utf16(`\\10.0.0.1\UDP\` + strings.Repeat("1", 120)), ErrFunnelTooLong},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseFunnelName(tc.in)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestParseFunnelMessage(t *testing.T) {
	_, err := ParseFunnel(connectMsg())
	require.ErrorIs(t, err, ErrNotFunnel)
	_, err = ParseFunnel(Message{MID: MIDConnectFunnel, Body: body{}.u32(0, 0, 0)})
	require.ErrorIs(t, err, ErrFunnelSyntax)
}

func TestRewriteFunnelErrors(t *testing.T) {
	to := netip.MustParseAddrPort("203.0.113.7:40000")
	vlc := layoutFunnelPacket(1, 0, append(utf16(vlcFunnelName), vlcTrailer...))
	badName := layoutFunnelPacket(1, 0, append(utf16(`\\192.168.1.10\UDP\70000`), 0, 0))
	dst := []byte("keep")
	cases := []struct {
		name string
		pkt  []byte
		to   netip.AddrPort
		want error
	}{
		{"not a funnel", AppendCommand(nil, 0, connectMsg()), to, ErrNotFunnel},
		{"malformed name", badName, to, ErrFunnelPort},
		{"port 0", vlc, netip.AddrPortFrom(to.Addr(), 0), ErrReplacement},
		{"invalid ip", vlc, netip.AddrPort{}, ErrReplacement},
		{"short", vlc[:100], to, ErrShortBuffer},
		{"not mms", []byte("GET / HTTP/1.0\r\n\r\n"), to, ErrSessionID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := RewriteFunnel(dst, tc.pkt, tc.to)
			require.ErrorIs(t, err, tc.want)
			require.Equal(t, "keep", string(out), "nothing appended on error")
		})
	}
}

func TestRewriteFunnelKeepsSenderChunkCount(t *testing.T) {
	// A sender following the spec's wording (chunkCount = total/8, not
	// messageLength/8) keeps its convention: chunkCount moves by the same
	// number of chunks as the message.
	in := layoutFunnelPacket(1, 0, append(utf16(vlcFunnelName), vlcTrailer...))
	binary.LittleEndian.PutUint32(in[16:], uint32(len(in)/8))
	out, _, err := RewriteFunnel(nil, in, netip.MustParseAddrPort("10.0.0.1:1234"))
	require.NoError(t, err)
	assert.Equal(t, uint32(len(out)/8), binary.LittleEndian.Uint32(out[16:]))
	assert.Equal(t, uint32(len(out)-16), binary.LittleEndian.Uint32(out[8:]))
}

func TestRewriteFunnelAddressForms(t *testing.T) {
	in := layoutFunnelPacket(1, 0, append(utf16(`\\[fd00::17]\UDP\5004`), 0, 0))
	cases := []struct {
		to   string
		want string
	}{
		{"10.1.2.3:9", `\\10.1.2.3\UDP\9`},                   // IPv4 drops the brackets
		{"[::ffff:10.1.2.3]:9", `\\10.1.2.3\UDP\9`},          // v4-mapped is written unmapped
		{"[fe80::1%eth0]:9", `\\[fe80::1]\UDP\9`},            // no zone on the wire
		{"[2001:db8::1]:65535", `\\[2001:db8::1]\UDP\65535`}, // IPv6 keeps them
	}
	for _, tc := range cases {
		t.Run(tc.to, func(t *testing.T) {
			out, _, err := RewriteFunnel(nil, in, netip.MustParseAddrPort(tc.to))
			require.NoError(t, err)
			assert.True(t, bytes.HasPrefix(out[60:], append(utf16(tc.want), 0, 0)), "%q", out[60:])
		})
	}
}

func TestAppendFunnelName(t *testing.T) {
	f := Funnel{netip.MustParseAddr("2001:db8::7"), TransportTCP, 1037}
	assert.Equal(t, utf16(`\\2001:db8::7\TCP\1037`), AppendFunnelName(nil, f))
	assert.Equal(t, utf16(`\\10.0.0.1\NONE\1`), AppendFunnelName(nil, Funnel{netip.MustParseAddr("10.0.0.1"), TransportNone, 1}))
}

// checkRewrite asserts the invariants of a successful rewrite of in to out:
// the output frames and walks, its length fields agree, and only the funnel
// names' address and port changed.
func checkRewrite(t *testing.T, in, out []byte, to netip.AddrPort) {
	t.Helper()
	_, nin, err := ParsePacket(in)
	require.NoError(t, err)
	in = in[:nin]
	p, n, err := ParsePacket(out)
	require.NoError(t, err, "output frames")
	require.Equal(t, len(out), n)
	require.Equal(t, len(out)-16, int(p.Header.MessageLength))
	delta := (len(out) - len(in)) / 8
	require.Zero(t, (len(out)-len(in))%8)
	require.Equal(t, binary.LittleEndian.Uint32(in[16:])+uint32(int32(delta)), p.Header.ChunkCount)
	require.Equal(t, in[:8], out[:8])
	require.Equal(t, in[12:16], out[12:16])
	require.Equal(t, in[20:32], out[20:32])

	ri, ro := in[32:], out[32:]
	for len(ri) >= 8 {
		mi, ni, err := ParseMessage(ri)
		require.NoError(t, err)
		mo, no, err := ParseMessage(ro)
		require.NoError(t, err, "output walks")
		require.Equal(t, mi.MID, mo.MID)
		rawIn, rawOut := ri[:ni], ro[:no]
		fn, ferr := parseFunnelMessage(rawIn)
		if mi.MID != MIDConnectFunnel || ferr != nil || fn.Transport != TransportUDP {
			require.Equal(t, rawIn, rawOut, "message %s unchanged", mi.MID)
		} else {
			fo, err := parseFunnelMessage(rawOut)
			require.NoError(t, err)
			require.Equal(t, Funnel{to.Addr().Unmap().WithZone(""), TransportUDP, to.Port()}, fo.Funnel)
			require.Equal(t, rawIn[4:28+fn.addr.start], rawOut[4:28+fo.addr.start], "fields and leading \\\\")
			require.Equal(t, rawIn[28+fn.addr.end:28+fn.port.start], rawOut[28+fo.addr.end:28+fo.port.start], "separators and transport")
			tailIn, tailOut := rawIn[28+fn.port.end:], rawOut[28+fo.port.end:]
			require.True(t, bytes.HasPrefix(tailOut, tailIn), "trailer kept")
			require.Equal(t, make([]byte, len(tailOut)-len(tailIn)), tailOut[len(tailIn):], "zero padding")
			require.Less(t, len(tailOut)-len(tailIn), 8)
		}
		ri, ro = ri[ni:], ro[no:]
	}
	require.Equal(t, ri, ro, "bytes after the last message")
}

func FuzzFunnelString(f *testing.F) {
	for _, tc := range funnelGoldenCases() {
		f.Add(append(utf16(tc.text), tc.trailer...))
		f.Add(utf16(tc.wantText))
	}
	f.Add(utf16(`\\[fe80::1%25eth0]\uDp\00001`))
	f.Add(utf16(`\\::ffff:1.2.3.4\TCP\65535`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fn, n, err := ParseFunnelName(b)
		if err != nil {
			return
		}
		require.True(t, n <= len(b) && n%2 == 0)
		again, n2, err := ParseFunnelName(b[:n])
		require.NoError(t, err, "the text alone parses")
		require.Equal(t, fn, again)
		require.Equal(t, n, n2)

		built := AppendFunnelName(nil, fn)
		round, n3, err := ParseFunnelName(built)
		require.NoError(t, err, "parse(build(parse(x))) for %q", built)
		require.Equal(t, fn, round)
		require.Equal(t, len(built), n3)
	})
}

func FuzzRewrite(f *testing.F) {
	for _, tc := range funnelGoldenCases() {
		in := layoutFunnelPacket(tc.seq, tc.maxBitRate, append(utf16(tc.text), tc.trailer...))
		a := tc.to.Addr().AsSlice()
		f.Add(in, a, tc.to.Port())
	}
	two := AppendCommand(nil, 3, connectMsg(), Message{MID: MIDConnectFunnel, Body: funnelBody(vlcFunnelName, vlcTrailer)}, pongMsg())
	f.Add(two, []byte{10, 0, 0, 1}, uint16(1))
	f.Fuzz(func(t *testing.T, in, ip []byte, port uint16) {
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			return
		}
		to := netip.AddrPortFrom(addr, port)
		out, _, err := RewriteFunnel(nil, in, to)
		if err != nil {
			require.Nil(t, out)
			return
		}
		checkRewrite(t, in, out, to)
	})
}

// Example: the VLC funnel of PROTOCOL.md §1.2 through the client's side of
// the filter, rewritten to the proxy's external address.
func ExampleStreams_ClientToServer() {
	var fields []byte
	for _, v := range []uint32{0, 0xFFFFFFFF, 0, 0x000A0000, 2} { // playIncarnation … funnelMode
		fields = binary.LittleEndian.AppendUint32(fields, v)
	}
	name := AppendFunnelName(nil, Funnel{netip.MustParseAddr("192.168.1.10"), TransportUDP, 7000})
	body := append(append(fields, name...), 0, 0, '0', 0) // NUL, then VLC's '0'
	pkt := AppendCommand(nil, 1, Message{MID: MIDConnectFunnel, Body: body})

	lease := func(_ context.Context, announced Funnel, _ func(netip.AddrPort) bool) (netip.AddrPort, error) {
		fmt.Println("announced", announced.Addr, announced.Port)
		return netip.MustParseAddrPort("203.0.113.7:40000"), nil
	}
	var out bytes.Buffer
	if err := NewStreams(lease, nil).ClientToServer(context.Background(), &out, bytes.NewReader(pkt)); err != nil {
		panic(err)
	}
	p, _, _ := ParsePacket(out.Bytes())
	m, _, _ := ParseMessage(p.Messages)
	f, _ := ParseFunnel(m)
	fmt.Println("rewritten", f.Addr, f.Port, len(pkt), out.Len(), p.Header.Seq)
	// Output:
	// announced 192.168.1.10 7000
	// rewritten 203.0.113.7 40000 112 112 1
}
