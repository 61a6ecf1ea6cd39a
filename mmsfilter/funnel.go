package mmsfilter

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
)

// Funnel layout (LinkViewerToMacConnectFunnel, PROTOCOL.md §2.2, [MS-MMSP]
// §2.2.4.18), offsets relative to the start of the message:
//
//	 0          4     8          12         16         20         24     28
//	+----------+-----+----------+----------+----------+----------+------+------------------------+
//	| chunkLen | MID | playInc. | maxBlock | maxFunnel| maxBitR. | mode | funnelName (UTF-16LE)… |
//	+----------+-----+----------+----------+----------+----------+------+------------------------+
//
// funnelName is \\<ip>\<UDP|TCP>\<port>, with no length field and no
// mandatory NUL: it ends at the first 0x0000 unit or at the end of the
// message. Clients add a NUL; VLC adds a '0' unit after it; zero padding
// fills the last chunk.
const (
	// funnelNameOff is where funnelName starts: absolute offset 60.
	funnelNameOff = 28

	// maxFunnelNameUnits bounds the scan for the NUL. The longest valid name
	// is 78 units: \\ (2) + [ (1) + the 45-character IPv4-mapped IPv6 form +
	// a zone of up to 19 (%25 + a 16-byte interface name) + ] (1) + \UDP\
	// (5) + 5 digits. 128 leaves room for tolerance and still keeps the
	// narrowed copy on the stack. (The old netfilter helper stopped at 28
	// units, too short even for long IPv4 names.)
	maxFunnelNameUnits = 128

	// maxPortDigits: the port is 1–5 digits ([MS-MMSP] §2.2.4.18 ABNF).
	maxPortDigits = 5
)

// Funnel is what a client announces in a ConnectFunnel message. The server
// ignores Addr and sends to the control connection's peer at Port ([MS-MMSP]
// §3.2.5.5), so Addr is informative only: never send to it.
type Funnel struct {
	Addr      netip.Addr
	Transport Transport
	Port      uint16
}

// span is a byte range within a funnel name region.
type span struct{ start, end int }

// funnelName is a parsed funnel name plus where its address token (brackets
// included) and port sit, so that a rewrite replaces exactly those bytes.
type funnelName struct {
	Funnel
	addr, port span
	bracketed  bool
}

// ParseFunnelName parses a funnel name from b, the bytes from the start of
// funnelName (absolute offset 60) to the end of the message. n is the byte
// length of the text, NUL excluded. The parse is tolerant in what the spec
// allows: IPv4 or IPv6 text (bare or in RFC 3986 brackets, with a zone),
// UDP/TCP in any case, a port of 1–5 digits in 1–65535, a NUL or none,
// anything after the NUL. It rejects everything else: a name that is not
// ASCII, has extra fields or characters, or is longer than
// maxFunnelNameUnits.
func ParseFunnelName(b []byte) (Funnel, int, error) {
	fn, n, err := parseFunnelName(b)
	return fn.Funnel, n, err
}

func parseFunnelName(b []byte) (funnelName, int, error) {
	// Narrow the UTF-16 text to ASCII on the stack. Every unit is checked
	// whole; the netfilter helper looked only at low bytes, so U+0100 read
	// as a NUL and U+0131 as '1'.
	var text [maxFunnelNameUnits]byte
	n := 0
	for 2*n+2 <= len(b) {
		u := binary.LittleEndian.Uint16(b[2*n:])
		if u == 0 {
			break
		}
		if n == maxFunnelNameUnits {
			return funnelName{}, 0, ErrFunnelTooLong
		}
		if u >= 0x80 {
			return funnelName{}, 0, fmt.Errorf("%w: non-ASCII unit %#04x", ErrFunnelSyntax, u)
		}
		text[n] = byte(u)
		n++
	}
	s := text[:n]

	if len(s) < 2 || s[0] != '\\' || s[1] != '\\' {
		return funnelName{}, 0, fmt.Errorf("%w: no leading \\\\", ErrFunnelSyntax)
	}
	addrEnd := indexBackslash(s, 2)
	if addrEnd <= 2 {
		return funnelName{}, 0, fmt.Errorf("%w: no address", ErrFunnelSyntax)
	}
	protoEnd := indexBackslash(s, addrEnd+1)
	if protoEnd != addrEnd+4 {
		return funnelName{}, 0, fmt.Errorf("%w: no transport", ErrFunnelSyntax)
	}
	var fn funnelName
	switch proto := s[addrEnd+1 : protoEnd]; {
	case equalFoldASCII(proto, "udp"):
		fn.Transport = TransportUDP
	case equalFoldASCII(proto, "tcp"):
		fn.Transport = TransportTCP
	default:
		return funnelName{}, 0, fmt.Errorf("%w: transport %q", ErrFunnelSyntax, proto)
	}

	addr := s[2:addrEnd]
	if addr[0] == '[' {
		if len(addr) < 2 || addr[len(addr)-1] != ']' {
			return funnelName{}, 0, fmt.Errorf("%w: unclosed bracket", ErrFunnelAddr)
		}
		fn.bracketed = true
		addr = addr[1 : len(addr)-1]
	}
	ip, err := netip.ParseAddr(string(addr))
	if err != nil {
		return funnelName{}, 0, fmt.Errorf("%w: %w", ErrFunnelAddr, err)
	}
	if fn.bracketed && !ip.Is6() {
		return funnelName{}, 0, fmt.Errorf("%w: brackets around IPv4", ErrFunnelAddr)
	}
	fn.Addr = ip

	port := s[protoEnd+1:]
	if len(port) == 0 || len(port) > maxPortDigits {
		return funnelName{}, 0, fmt.Errorf("%w: %d digits", ErrFunnelPort, len(port))
	}
	v := 0
	for _, c := range port {
		if c < '0' || c > '9' {
			return funnelName{}, 0, fmt.Errorf("%w: %q", ErrFunnelPort, port)
		}
		v = v*10 + int(c-'0')
	}
	if v < 1 || v > 0xFFFF {
		return funnelName{}, 0, fmt.Errorf("%w: %d", ErrFunnelPort, v)
	}
	fn.Port = uint16(v)

	fn.addr = span{2 * 2, 2 * addrEnd}
	fn.port = span{2 * (protoEnd + 1), 2 * n}
	return fn, 2 * n, nil
}

// indexBackslash returns the index of the first '\' in s at or after from,
// or -1.
func indexBackslash(s []byte, from int) int {
	for i := from; i < len(s); i++ {
		if s[i] == '\\' {
			return i
		}
	}
	return -1
}

// equalFoldASCII compares b to the lower-case ASCII word w ignoring case.
func equalFoldASCII(b []byte, w string) bool {
	if len(b) != len(w) {
		return false
	}
	for i := range b {
		if b[i]|0x20 != w[i] {
			return false
		}
	}
	return true
}

// AppendFunnelName appends f as a UTF-16LE funnel name, \\<ip>\<UDP|TCP>\<port>,
// with no NUL: a client builder adds its own terminator and trailer. The
// address is written as netip formats it (IPv6 without brackets, as VLC
// does); f.Transport other than UDP or TCP is written as "NONE".
func AppendFunnelName(dst []byte, f Funnel) []byte {
	var buf [64]byte
	dst = appendUTF16(dst, `\\`)
	dst = appendUTF16Bytes(dst, f.Addr.AppendTo(buf[:0]))
	dst = appendUTF16(dst, `\`)
	switch f.Transport {
	case TransportUDP:
		dst = appendUTF16(dst, "UDP")
	case TransportTCP:
		dst = appendUTF16(dst, "TCP")
	default:
		dst = appendUTF16(dst, "NONE")
	}
	dst = appendUTF16(dst, `\`)
	return appendUTF16Bytes(dst, strconv.AppendUint(buf[:0], uint64(f.Port), 10))
}

func appendUTF16(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		dst = append(dst, s[i], 0)
	}
	return dst
}

func appendUTF16Bytes(dst, s []byte) []byte {
	for _, c := range s {
		dst = append(dst, c, 0)
	}
	return dst
}

// ParseFunnel parses the funnel name of a ConnectFunnel message.
func ParseFunnel(m Message) (Funnel, error) {
	if m.MID != MIDConnectFunnel {
		return Funnel{}, ErrNotFunnel
	}
	if len(m.Body) < funnelNameOff-messagePrefixLen {
		return Funnel{}, fmt.Errorf("%w: message ends before funnelName", ErrFunnelSyntax)
	}
	f, _, err := ParseFunnelName(m.Body[funnelNameOff-messagePrefixLen:])
	return f, err
}

// parseFunnelMessage parses the funnel name of msg, one whole ConnectFunnel
// message (chunkLen through padding).
func parseFunnelMessage(msg []byte) (funnelName, error) {
	if len(msg) < funnelNameOff {
		return funnelName{}, fmt.Errorf("%w: message ends before funnelName", ErrFunnelSyntax)
	}
	fn, _, err := parseFunnelName(msg[funnelNameOff:])
	return fn, err
}

// checkReplacement rejects what cannot be written as a funnel address.
func checkReplacement(to netip.AddrPort) error {
	if !to.Addr().IsValid() || to.Port() == 0 {
		return fmt.Errorf("%w: %v", ErrReplacement, to)
	}
	return nil
}

// rewriteLen is the length appendFunnelRewrite(nil, msg, fn, to) returns,
// computed without building it.
func rewriteLen(msg []byte, fn funnelName, to netip.AddrPort) int {
	ip := to.Addr().Unmap().WithZone("")
	var buf [64]byte
	addr := len(ip.AppendTo(buf[:0]))
	if ip.Is6() && fn.bracketed {
		addr += 2
	}
	port := len(strconv.AppendUint(buf[:0], uint64(to.Port()), 10))
	name := len(msg) - funnelNameOff
	n := funnelNameOff + fn.addr.start + 2*addr + (fn.port.start - fn.addr.end) + 2*port + (name - fn.port.end)
	return (n + chunkSize - 1) / chunkSize * chunkSize
}

// appendFunnelRewrite appends msg, one whole ConnectFunnel message parsed as
// fn, to dst with the address and the port of its funnel name replaced by
// to. The rewrite rules:
//
//   - Only the address token and the port digits change; the leading \\,
//     the separators and the transport keep their bytes (a lowercase "udp"
//     stays lowercase), and every field before offset 60 is copied.
//   - The address is written unmapped and without a zone (the server is
//     remote, a zone means nothing there); brackets are kept for an IPv6
//     replacement of a bracketed name and dropped for IPv4.
//   - Everything after the port up to the end of the message (the NUL, what
//     trails it, the old padding) is kept byte for byte, as the netfilter
//     helper did. We keep it rather than write NUL + zeros because WMP's
//     trailer is unconfirmed (PROTOCOL.md §8): whatever the client put
//     there, the server still sees. A same-length replacement therefore
//     changes nothing but the characters.
//   - Zero padding then makes the message a whole number of chunks, and
//     chunkLen is set from the new length. The caller fixes the header.
func appendFunnelRewrite(dst, msg []byte, fn funnelName, to netip.AddrPort) []byte {
	start := len(dst)
	name := msg[funnelNameOff:]
	dst = append(dst, msg[:funnelNameOff]...)
	dst = append(dst, name[:fn.addr.start]...)

	ip := to.Addr().Unmap().WithZone("")
	var buf [64]byte
	if ip.Is6() && fn.bracketed {
		dst = appendUTF16(dst, "[")
		dst = appendUTF16Bytes(dst, ip.AppendTo(buf[:0]))
		dst = appendUTF16(dst, "]")
	} else {
		dst = appendUTF16Bytes(dst, ip.AppendTo(buf[:0]))
	}
	dst = append(dst, name[fn.addr.end:fn.port.start]...)
	dst = appendUTF16Bytes(dst, strconv.AppendUint(buf[:0], uint64(to.Port()), 10))
	dst = append(dst, name[fn.port.end:]...)

	for (len(dst)-start)%chunkSize != 0 {
		dst = append(dst, 0)
	}
	binary.LittleEndian.PutUint32(dst[start+offChunkLen:], uint32((len(dst)-start)/chunkSize))
	return dst
}

// rebuildPacket appends the command packet pkt to dst, handing each
// ConnectFunnel message to edit, which appends it (changed or not) and says
// whether it changed it; other messages and any bytes after the last whole
// message are copied. If nothing changed, dst is returned as it came and
// changed is false, so the caller forwards pkt itself.
//
// When something changed, messageLength is set from the new total and
// chunkCount moves by the same number of chunks. Shifting chunkCount
// rather than recomputing it keeps the sender's own convention (all known
// implementations send messageLength/8, the spec's text says total/8);
// everything else in the header, seq included, is copied.
func rebuildPacket(dst, pkt []byte, edit func(dst, msg []byte) ([]byte, bool)) (_ []byte, changed bool, _ error) {
	start := len(dst)
	dst = append(dst, pkt[:HeaderLen]...)
	rest := pkt[HeaderLen:]
	for len(rest) >= messagePrefixLen {
		m, n, err := ParseMessage(rest)
		if err != nil {
			return dst[:start], false, err
		}
		raw := rest[:n]
		if m.MID == MIDConnectFunnel {
			var c bool
			dst, c = edit(dst, raw)
			changed = changed || c
		} else {
			dst = append(dst, raw...)
		}
		rest = rest[n:]
	}
	dst = append(dst, rest...)
	if !changed {
		return dst[:start], false, nil
	}
	total := len(dst) - start
	if total > MaxCommandLen {
		return dst[:start], false, fmt.Errorf("%w: %d bytes", ErrRewriteTooLong, total)
	}
	out := dst[start:]
	deltaChunks := int32(total-len(pkt)) / chunkSize
	binary.LittleEndian.PutUint32(out[offMessageLength:], uint32(total-lengthBias))
	binary.LittleEndian.PutUint32(out[offChunkCount:], binary.LittleEndian.Uint32(out[offChunkCount:])+uint32(deltaChunks))
	return dst, true, nil
}
