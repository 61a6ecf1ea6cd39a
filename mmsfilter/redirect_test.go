package mmsfilter

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// redirectMsg is a ReportRedirect of type typ to loc.
func redirectMsg(typ uint16, loc string) Message {
	return msg(MIDReportRedirect, body{}.u32(0).u16(typ, uint16(2*len(loc)+2)).utf16z(loc))
}

func TestParseRedirect(t *testing.T) {
	server := netip.MustParseAddr("198.51.100.7")
	tests := []struct {
		name    string
		m       Message
		want    netip.AddrPort
		wantErr string
	}{
		{"another port of the server", redirectMsg(RedirectURL, "mms://198.51.100.7:8080/live"), netip.MustParseAddrPort("198.51.100.7:8080"), ""},
		{"no port is 1755", redirectMsg(RedirectURL, "mmst://198.51.100.7/live"), netip.MustParseAddrPort("198.51.100.7:1755"), ""},
		{"a name is taken as the server's", redirectMsg(RedirectURL, "MMSU://media.example:7007/a"), netip.MustParseAddrPort("198.51.100.7:7007"), ""},
		{"another server", redirectMsg(RedirectURL, "mms://203.0.113.9:8080/x"), netip.AddrPort{}, "another server 203.0.113.9"},
		{"another proxy", redirectMsg(RedirectProxy, "mms://198.51.100.7:8080/"), netip.AddrPort{}, "type 2 is not a URL"},
		{"not MMS", redirectMsg(RedirectURL, "http://198.51.100.7:8080/"), netip.AddrPort{}, `scheme "http" is not MMS`},
		{"port 0", redirectMsg(RedirectURL, "mms://198.51.100.7:0/"), netip.AddrPort{}, `port "0"`},
		{"no host", redirectMsg(RedirectURL, "mms:///x"), netip.AddrPort{}, "no host"},
		{"short", msg(MIDReportRedirect, body{}.u32(0)), netip.AddrPort{}, "cbLocation 0"},
		{"location past the message", msg(MIDReportRedirect, body{}.u32(0).u16(1, 200).utf16z("mms://a/")), netip.AddrPort{}, "cbLocation 200"},
		{"odd cbLocation", msg(MIDReportRedirect, body{}.u32(0).u16(1, 3).utf16z("mms://a/")), netip.AddrPort{}, "cbLocation 3"},
		{"no NUL", msg(MIDReportRedirect, body{}.u32(0).u16(1, 4).raw('m', 0, 'm', 0)), netip.AddrPort{}, "not NUL-terminated"},
		{"another message", msg(MIDReportOpenFile, body{}.u32(0)), netip.AddrPort{}, "malformed redirect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Through the wire form, so the body carries its padding.
			m := roundTrip(t, tt.m)
			r, err := ParseRedirect(m)
			var dst netip.AddrPort
			if err == nil {
				dst, err = redirectDestination(r, server)
			}
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, dst)
		})
	}
}

// roundTrip encodes m as a message and parses it back.
func roundTrip(t testing.TB, m Message) Message {
	got, _, err := ParseMessage(AppendMessage(nil, m))
	require.NoError(t, err)
	return got
}

// FuzzParseRedirect: no panic on any body, and an accepted location is
// what the message says, whatever follows its NUL.
func FuzzParseRedirect(f *testing.F) {
	for _, loc := range []string{"mms://198.51.100.7:8080/live", "mms:///", "http://x/"} {
		f.Add([]byte(redirectMsg(RedirectURL, loc).Body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRedirect(Message{MID: MIDReportRedirect, Body: b})
		if err != nil {
			return
		}
		if len(r.Location) > 3*maxRedirectLocation {
			t.Fatalf("location of %d bytes", len(r.Location))
		}
		redirectDestination(r, netip.MustParseAddr("198.51.100.7"))
	})
}

// TestFilterFollowsRedirect is the redirect through the real proxy: the
// server on a filtered port redirects the player to another of its ports,
// which is not one of the filter's, and the MMS filter runs on the
// player's next connection there (its UDP funnel is rewritten). The same
// connection without the redirect passes the funnel unchanged.
func TestFilterFollowsRedirect(t *testing.T) {
	for _, redirect := range []bool{true, false} {
		t.Run(fmt.Sprintf("redirect %v", redirect), func(t *testing.T) {
			env := newFilterEnv(t, 0)
			srv := env.server
			other := newScriptedServer(t) // a port with no filter
			pl := &player{t: t, env: env}
			pl.conn, pl.br, _ = socksHandshake(t, env.proxyAddr, 1, srv.addr)
			srv.accept()
			pl.send(openFileMsg("live"))
			srv.expect(MIDOpenFile)
			if redirect {
				srv.send(redirectMsg(RedirectURL, fmt.Sprintf("mms://127.0.0.1:%d/live", other.addr.Port())))
				pl.expect(MIDReportRedirect)
			}
			pl.conn.Close()

			next := &player{t: t, env: env}
			next.conn, next.br, _ = socksHandshake(t, env.proxyAddr, 1, other.addr)
			other.accept()
			next.send(msg(MIDConnectFunnel, funnelBody(`\\10.9.9.9\UDP\41007`, vlcTrailer)))
			f, err := ParseFunnel(other.expect(MIDConnectFunnel))
			require.NoError(t, err)
			if redirect {
				assert.Equal(t, external, f.Addr, "the MMS filter rewrote the funnel on the redirected connection")
			} else {
				assert.Equal(t, netip.MustParseAddr("10.9.9.9"), f.Addr, "no filter on that port")
			}
		})
	}
}
