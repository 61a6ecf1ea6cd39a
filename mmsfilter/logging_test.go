package mmsfilter

import (
	"bytes"
	"context"
	"encoding/binary"
	"fwproxy/proxy"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/leases"
)

// Absolute offsets of the two rewritten fields (PROTOCOL.md §2.2, Logging).
const (
	absLogAddr = 1190
	absLogName = 1194
	absLogOS   = 1454 // the field after szComputerDNS
)

// layoutLoggingPacket writes a Logging packet field by field from the table
// of PROTOCOL.md §2.2 and the length rules of §1.2, not through
// AppendCommand, so the golden tests check the builder as well as the
// rewrite. name fills szComputerDNS (at most 260 bytes, zero-padded).
func layoutLoggingPacket(seq uint16, cbSize uint32, addr [4]byte, name []byte) []byte {
	const total = 1536 // 32 + 8*188: the 1498-byte message padded to 1504
	var b []byte
	b = append(b, 0x01, 0x00, 0x00, 0x00)                                // 0 rep, version, versionMinor, padding
	b = append(b, 0xCE, 0xFA, 0x0B, 0xB0)                                // 4 sessionId
	b = binary.LittleEndian.AppendUint32(b, total-16)                    // 8 messageLength
	b = append(b, 'M', 'M', 'S', ' ')                                    // 12 seal
	b = binary.LittleEndian.AppendUint32(b, (total-16)/8)                // 16 chunkCount
	b = binary.LittleEndian.AppendUint16(b, seq)                         // 20 seq
	b = append(b, 0, 0)                                                  // 22 MBZ
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)                                // 24 timeSent
	b = binary.LittleEndian.AppendUint32(b, (total-32)/8)                // 32 chunkLen
	b = binary.LittleEndian.AppendUint32(b, 0x00030032)                  // 36 MID
	b = binary.LittleEndian.AppendUint32(b, cbSize)                      // 40 cbSize
	b = fixedText(b, "NSPlayer/9.0.0.4503 mms://203.0.113.9/live", 1142) // 44 info
	b = binary.LittleEndian.AppendUint32(b, 1)                           // 1186 dwSourceId
	b = append(b, addr[:]...)                                            // 1190 dwIPAddress
	b = append(b, name...)                                               // 1194 szComputerDNS
	b = append(b, make([]byte, 260-len(name))...)
	b = fixedText(b, "Windows_NT", 16)                             // 1454 szOS
	b = binary.LittleEndian.AppendUint64(b, 0x0000_0A00_0000_4A65) // 1470 qwOSVersion
	b = fixedText(b, "Pentium", 16)                                // 1478 szCPU
	b = fixedText(b, "mms", 8)                                     // 1494 szProto
	b = fixedText(b, "UDP", 8)                                     // 1502 szTransport
	for _, v := range []uint32{3, 1, 2, 2, 0} {                    // 1510 the counters
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	for len(b) < total { // 1530: padding
		b = append(b, 0)
	}
	return b
}

// fixedText appends s NUL-terminated in a field of n bytes.
func fixedText(b []byte, s string, n int) []byte {
	b = append(b, s...)
	return append(b, make([]byte, n-len(s))...)
}

var (
	insideIPv4   = [4]byte{192, 168, 1, 10}
	noAddress    = [4]byte{0xFF, 0xFF, 0xFF, 0xFF}
	externalIPv4 = netip.MustParseAddr("203.0.113.7")
	insideName   = []byte("DESKTOP-4F2KQ7L.corp.example\x00")
	dashName     = []byte("-\x00")
)

type loggingCase struct {
	name, comment string
	cbSize        uint32
	addr          [4]byte
	computer      []byte
	policy        LoggingPolicy
	wantAddr      [4]byte
	wantName      []byte
	wantFields    []LoggingField
	malformed     bool
}

func loggingGoldenCases() []loggingCase {
	hideAll := LoggingPolicy{HideAddress: true, Address: externalIPv4, ScrubComputerName: true}
	hideAddr := LoggingPolicy{HideAddress: true, Address: externalIPv4}
	v6 := LoggingPolicy{HideAddress: true, Address: netip.MustParseAddr("2001:db8::7"), ScrubComputerName: true}
	return []loggingCase{
		{"logging_inside_identity", "an older player's Logging with its own IPv4 address and DNS name; both hidden",
			1490, insideIPv4, insideName, hideAll, [4]byte(externalIPv4.AsSlice()), dashName,
			[]LoggingField{LoggingAddress, LoggingComputerName}, false},
		{"logging_name_kept", "the same with mms_scrub_computer_name off: only the address changes",
			1490, insideIPv4, insideName, hideAddr, [4]byte(externalIPv4.AsSlice()), insideName,
			[]LoggingField{LoggingAddress}, false},
		{"logging_spec_defaults", "what the spec asks a client to send (0xFFFFFFFF and \"-\"): nothing to hide, unchanged",
			1490, noAddress, dashName, hideAll, noAddress, dashName, nil, false},
		{"logging_stale_name", "\"-\" followed by a stale name after its NUL: the whole field is cleared",
			1490, noAddress, []byte("-\x00OLDPC"), hideAll, noAddress, dashName,
			[]LoggingField{LoggingComputerName}, false},
		{"logging_ipv6_external", "an IPv6 external address does not fit dwIPAddress: 0xFFFFFFFF, the spec's none",
			1490, insideIPv4, insideName, v6, noAddress, dashName,
			[]LoggingField{LoggingAddress, LoggingComputerName}, false},
		{"logging_short_cbsize", "a cbSize too short for the fields: another layout, forwarded unchanged and counted",
			1000, insideIPv4, insideName, hideAll, insideIPv4, insideName, nil, true},
	}
}

// runLogging pushes in through ClientToServer with policy p and returns the
// output, the fields reported rewritten and the events.
func runLogging(t testing.TB, src io.Reader, p LoggingPolicy) ([]byte, []LoggingField, *recorder) {
	t.Helper()
	rec := &recorder{}
	s := NewStreams(nil, rec)
	var fields []LoggingField
	p.Rewritten = func(f LoggingField) { fields = append(fields, f) }
	s.SetLogging(p)
	var out bytes.Buffer
	require.NoError(t, s.ClientToServer(context.Background(), &out, src))
	return out.Bytes(), fields, rec
}

func TestLoggingGolden(t *testing.T) {
	for _, tc := range loggingGoldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			in := layoutLoggingPacket(5, tc.cbSize, tc.addr, tc.computer)
			// §1.2 by hand: 1530 bytes of fields padded to 1536.
			want := lengths{total: 1536, messageLength: 1520, chunkCount: 190, chunkLen: 188}
			require.Equal(t, want, lengthsOf(in), "input lengths")
			built := AppendCommand(nil, 5, Message{MID: MIDLogging, Body: in[40:1530]})
			require.Equal(t, in, built, "AppendCommand vs documented layout")
			golden(t, tc.name+".in.hex", tc.comment+"\ninput", in)

			out, fields, rec := runLogging(t, bytes.NewReader(in), tc.policy)
			require.Equal(t, want, lengthsOf(out), "the fields are fixed-size: no length changes")
			require.Equal(t, layoutLoggingPacket(5, tc.cbSize, tc.wantAddr, tc.wantName), out, "output vs documented layout")
			assert.Equal(t, in[:absLogAddr], out[:absLogAddr], "everything before dwIPAddress")
			assert.Equal(t, in[absLogOS:], out[absLogOS:], "everything after szComputerDNS")
			assert.Equal(t, tc.wantFields, fields)
			problems := rec.filtered("problem")
			if tc.malformed {
				assert.Equal(t, []string{"problem client_to_server logging_malformed"}, problems)
			} else {
				assert.Empty(t, problems)
			}
			golden(t, tc.name+".out.hex", tc.comment+"\noutput, external "+tc.policy.Address.String(), out)
		})
	}
}

func TestEditLogging(t *testing.T) {
	msgOf := func(pkt []byte) []byte { return slices.Clone(pkt[HeaderLen:]) }
	full := layoutLoggingPacket(1, 1490, insideIPv4, insideName)
	tests := []struct {
		name   string
		msg    []byte
		p      LoggingPolicy
		want   [NumLoggingFields]bool
		addr   [4]byte
		layout bool // ErrLoggingLayout expected
	}{
		{"zero policy changes nothing", msgOf(full), LoggingPolicy{}, [2]bool{}, insideIPv4, false},
		{"mapped external is written as IPv4", msgOf(full),
			LoggingPolicy{HideAddress: true, Address: netip.MustParseAddr("::ffff:203.0.113.7")},
			[2]bool{true, false}, [4]byte{203, 0, 113, 7}, false},
		{"no external address known: none", msgOf(full), LoggingPolicy{HideAddress: true},
			[2]bool{true, false}, noAddress, false},
		{"already the external address", msgOf(layoutLoggingPacket(1, 1490, [4]byte{203, 0, 113, 7}, dashName)),
			LoggingPolicy{HideAddress: true, Address: externalIPv4, ScrubComputerName: true},
			[2]bool{}, [4]byte{203, 0, 113, 7}, false},
		{"an all-zero name is empty", msgOf(layoutLoggingPacket(1, 1490, noAddress, nil)),
			LoggingPolicy{ScrubComputerName: true}, [2]bool{}, noAddress, false},
		{"a short message", msgOf(AppendCommand(nil, 1, msg(MIDLogging, body{}.u32(1490).zeros(100)))),
			LoggingPolicy{HideAddress: true}, [2]bool{}, [4]byte{}, true},
		{"cbSize past the body", msgOf(layoutLoggingPacket(1, 4000, insideIPv4, insideName)),
			LoggingPolicy{HideAddress: true}, [2]bool{}, insideIPv4, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := slices.Clone(tt.msg)
			got, err := editLogging(tt.msg, tt.p)
			if tt.layout {
				require.ErrorIs(t, err, ErrLoggingLayout)
				require.Equal(t, before, tt.msg, "untouched on error")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.addr, [4]byte(tt.msg[absLogAddr-HeaderLen:]))
		})
	}
}

// loggingSession is a client side with two Logging messages that name the
// inside host, one of them packed with a Pong, and the output the filter
// must produce from it.
func loggingSession(t testing.TB) (in, want []byte) {
	t.Helper()
	leaky := layoutLoggingPacket(0, 1490, insideIPv4, insideName)[HeaderLen:]
	clean := layoutLoggingPacket(0, 1490, [4]byte(externalIPv4.AsSlice()), dashName)[HeaderLen:]
	logging := func(m []byte) Message { return msg(MIDLogging, m[messagePrefixLen:]) }
	build := func(m []byte) []byte {
		w := &seqWriter{}
		w.cmd(connectMsg()).cmd(openFileMsg("live")).cmd(startPlayingMsg(4)).cmd(logging(m)).
			cmd(pongMsg(), logging(m)).cmd(closeFileMsg())
		return w.buf
	}
	return build(leaky), build(clean)
}

// TestLoggingAnySegmentation: the identity is hidden, and nothing else
// changes, whether the stream comes whole, split at any byte, one byte at
// a time or in random pieces.
func TestLoggingAnySegmentation(t *testing.T) {
	in, want := loggingSession(t)
	require.NotEqual(t, in, want)
	p := LoggingPolicy{HideAddress: true, Address: externalIPv4, ScrubComputerName: true}
	wantFields := []LoggingField{LoggingAddress, LoggingComputerName, LoggingAddress, LoggingComputerName}
	check := func(what string, r io.Reader) {
		t.Helper()
		out, fields, rec := runLogging(t, r, p)
		if !bytes.Equal(want, out) {
			require.Equal(t, want, out, what)
		}
		require.Equal(t, wantFields, fields, what)
		require.Empty(t, rec.filtered("problem"), what)
	}
	check("whole", bytes.NewReader(in))
	for k := 1; k < len(in); k++ {
		check("split at "+strconv.Itoa(k), splitReader(in, k))
	}
	check("one byte at a time", iotest.OneByteReader(bytes.NewReader(in)))
	check("EOF with the last data", iotest.DataErrReader(bytes.NewReader(in)))
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 200 {
		sizes := make([]int, 1+rng.IntN(16))
		for j := range sizes {
			sizes[j] = 1 + rng.IntN(700)
		}
		check("random pieces "+strconv.Itoa(i), &chunkReader{data: in, sizes: sizes})
	}
}

// loggingCounter counts the filter's Logging rewrites.
type loggingCounter struct {
	nopFilterObserver
	fields [NumLoggingFields]int
}

func (c *loggingCounter) LoggingRewritten(f LoggingField) { c.fields[f]++ }

// TestFilterHidesLoggingIdentity: the filter as the proxy runs it writes
// its external address (or, unset, its address towards the server) and
// scrubs the name unless told not to.
func TestFilterHidesLoggingIdentity(t *testing.T) {
	lcfg := leases.DefaultConfig()
	lcfg.ListenIP = netip.MustParseAddr("127.0.0.1")
	lm, err := leases.New(lcfg, leases.Deps{})
	require.NoError(t, err)
	t.Cleanup(func() { lm.Close() })

	in, _ := loggingSession(t)
	local := netip.MustParseAddrPort("198.51.100.4:50123")
	tests := []struct {
		name     string
		cfg      func(*Config)
		wantAddr [4]byte
		wantName []byte
		counted  [NumLoggingFields]int
	}{
		{"defaults: local address, name scrubbed", func(*Config) {}, [4]byte{198, 51, 100, 4}, dashName, [2]int{2, 2}},
		{"external_ip", func(c *Config) { c.ExternalIP = externalIPv4 }, [4]byte(externalIPv4.AsSlice()), dashName, [2]int{2, 2}},
		{"scrubbing off", func(c *Config) { c.ScrubComputerName = false }, [4]byte{198, 51, 100, 4}, insideName, [2]int{2, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.cfg(&cfg)
			obs := &loggingCounter{}
			f, err := New(cfg, Deps{Leases: lm, Observer: obs})
			require.NoError(t, err)
			c := f.NewConnection(proxy.SessionInfo{
				Client: netip.MustParseAddrPort("198.51.100.10:1044"),
				Target: netip.MustParseAddrPort("203.0.113.9:1755"),
				Local:  local,
			})
			defer c.Close()
			var out bytes.Buffer
			require.NoError(t, c.ClientToServer(context.Background(), &out, bytes.NewReader(in)))
			require.Len(t, out.Bytes(), len(in))

			want := layoutLoggingPacket(0, 1490, tt.wantAddr, tt.wantName)[HeaderLen+messagePrefixLen:]
			w := &seqWriter{}
			lm := msg(MIDLogging, want)
			w.cmd(connectMsg()).cmd(openFileMsg("live")).cmd(startPlayingMsg(4)).cmd(lm).cmd(pongMsg(), lm).cmd(closeFileMsg())
			require.Equal(t, w.buf, out.Bytes())
			assert.Equal(t, tt.counted, obs.fields)
		})
	}
}

// FuzzLogging: with the policy on, no output is longer or shorter than its
// input, only the two fields of client Logging messages change, every
// Logging the filter understood names no inside host afterwards, and a
// second pass changes nothing.
func FuzzLogging(f *testing.F) {
	for _, tc := range loggingGoldenCases() {
		f.Add(layoutLoggingPacket(5, tc.cbSize, tc.addr, tc.computer), externalIPv4.AsSlice(), true)
	}
	in, _ := loggingSession(f)
	f.Add(in, []byte{10, 0, 0, 1}, false)
	f.Add(in, netip.MustParseAddr("2001:db8::1").AsSlice(), true)
	f.Fuzz(func(t *testing.T, in, ip []byte, scrub bool) {
		addr, _ := netip.AddrFromSlice(ip)
		p := LoggingPolicy{HideAddress: true, Address: addr, ScrubComputerName: scrub}
		out, fields, rec := runLogging(t, bytes.NewReader(in), p)
		require.Len(t, out, len(in))
		if len(fields) == 0 {
			require.True(t, bytes.Equal(in, out), "nothing reported rewritten, yet bytes changed")
		}
		again, fields2, _ := runLogging(t, bytes.NewReader(out), p)
		require.True(t, bytes.Equal(out, again), "a second pass changed bytes")
		require.Empty(t, fields2, "a second pass rewrote fields")

		// Every changed byte lies in a rewritten field of a Logging
		// message that framed; with framing lost (pass-through) nothing
		// changes at all.
		if len(rec.filtered("problem client_to_server bad_")) > 0 || len(rec.filtered("problem client_to_server data_")) > 0 {
			return
		}
		diff := slices.Clone(out)
		for off := 0; off < len(in); {
			pk, n, err := ParsePacket(in[off:])
			if err != nil {
				break
			}
			mo := off + HeaderLen
			for rest := pk.Messages; len(rest) >= messagePrefixLen; {
				m, k, err := ParseMessage(rest)
				if err != nil {
					break
				}
				if m.MID == MIDLogging && len(m.Body) >= logMinSize {
					b := mo + messagePrefixLen
					copy(diff[b+logAddrOff:b+logNameOff+logNameLen], in[b+logAddrOff:b+logNameOff+logNameLen])
				}
				rest, mo = rest[k:], mo+k
			}
			off += n
		}
		require.True(t, bytes.Equal(in, diff), "a byte outside dwIPAddress and szComputerDNS changed")
	})
}

// TestLoggingThroughProxy: a player behind the proxy sends its session in
// small TCP segments; the server receives every byte as sent but
// dwIPAddress, which names the proxy's external address. (The test proxy's
// filter runs with name scrubbing off; TestFilterHidesLoggingIdentity
// covers the option.)
func TestLoggingThroughProxy(t *testing.T) {
	env := newFilterEnv(t, 0)
	conn, _, _ := socksHandshake(t, env.proxyAddr, 1, env.server.addr)
	env.server.accept()
	require.NoError(t, conn.(*net.TCPConn).SetNoDelay(true))

	in, _ := loggingSession(t)
	leaky := layoutLoggingPacket(0, 1490, insideIPv4, insideName)[HeaderLen+messagePrefixLen:]
	want := layoutLoggingPacket(0, 1490, [4]byte(external.AsSlice()), insideName)[HeaderLen+messagePrefixLen:]
	require.Equal(t, len(leaky), len(want))

	written := make(chan error, 1)
	go func() {
		var err error
		for rest := in; len(rest) > 0 && err == nil; {
			n := min(len(rest), 97) // odd-sized segments that cut every field
			_, err = conn.Write(rest[:n])
			rest = rest[n:]
		}
		written <- err
	}()
	var logging int
	for range 6 { // the packets of loggingSession
		for _, m := range readPacket(t, env.server.br) {
			if m.MID != MIDLogging {
				continue
			}
			logging++
			require.Equal(t, want, m.Body, "Logging as the server sees it")
		}
	}
	require.NoError(t, <-written)
	assert.Equal(t, 2, logging)
}
