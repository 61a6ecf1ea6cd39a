package proxy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// testUsers has alice with password s3cret, hashed at bcrypt's lowest
// cost: under the race detector the default cost takes seconds a check.
func testUsers(t *testing.T) *Users {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	require.NoError(t, err)
	users, err := ParseUsers(strings.NewReader("# test users\n\nalice:" + string(h) + "\n"))
	require.NoError(t, err)
	return users
}

func TestAuthentication(t *testing.T) {
	target := echoTarget(t)
	users := testUsers(t)
	tests := []struct {
		name       string
		offer      []byte
		user, pass string
		wantMethod byte
		wantStatus byte // RFC 1929 status, 0 = success
		counted    string
	}{
		{"right password", []byte{methodNoAuth, methodUserPass}, "alice", "s3cret", methodUserPass, 0, "auth/username_password/success"},
		{"wrong password", []byte{methodUserPass}, "alice", "guess", methodUserPass, 1, "auth/username_password/failure"},
		{"unknown user", []byte{methodUserPass}, "mallory", "s3cret", methodUserPass, 1, "auth/username_password/failure"},
		{"no acceptable method", []byte{methodNoAuth}, "", "", methodNoAcceptable, 0, "handshake/no_acceptable_method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, testConfig(), Deps{Credentials: users})
			c := dialClient(t, ts.addr)
			require.Equal(t, tt.wantMethod, c.greet(tt.offer...))
			if tt.wantMethod == methodNoAcceptable {
				c.expectClosed()
			} else {
				status := c.login(tt.user, tt.pass)
				require.Equal(t, tt.wantStatus, status)
				if status != 0 {
					c.expectClosed()
				} else {
					rep, _ := c.request(CommandConnect, spec(target))
					require.Equal(t, ReplySucceeded, rep)
					c.write([]byte("hi"))
					assert.Equal(t, []byte("hi"), c.read(2))
				}
			}
			c.conn.Close()
			require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
			assert.Equal(t, 1, ts.rec.count(tt.counted))
		})
	}
}

func TestParseUsersRejectsBadFiles(t *testing.T) {
	tests := []struct{ name, file, want string }{
		{"clear text password", "alice:s3cret\n", "not a bcrypt hash"},
		{"no colon", "alice\n", "name:bcrypt-hash"},
		{"empty name", ":$2a$10$abc\n", "1 to 255 bytes"},
		{"empty file", "# nobody\n", "no users"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseUsers(strings.NewReader(tt.file))
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// TestBadInput sends malformed handshakes; each must get the reply the RFC
// asks for, or a close, be counted, and leave no session behind.
func TestBadInput(t *testing.T) {
	target := echoTarget(t)
	connectTo := func(atyp byte, addr ...byte) []byte {
		return append(append([]byte{5, 1, 0, atyp}, addr...), byte(target.Port()>>8), byte(target.Port()))
	}
	tests := []struct {
		name      string
		send      []byte
		halfClose bool   // client ends its stream after sending
		wantReply []byte // bytes the server must send before closing
		counted   string
	}{
		{"wrong version", []byte{4, 1, 0}, false, nil, "handshake/bad_version"},
		{"truncated greeting", []byte{5, 3, 0}, true, nil, "handshake/truncated"},
		{"zero methods", []byte{5, 0}, false, []byte{5, 0xFF}, "handshake/no_acceptable_method"},
		{"truncated request", []byte{5, 1, 0, 5, 1, 0, 1, 127}, true, []byte{5, 0}, "handshake/truncated"},
		{"wrong request version", append([]byte{5, 1, 0, 4}, connectTo(1, 127, 0, 0, 1)[1:]...), false, []byte{5, 0}, "handshake/bad_version"},
		{"unknown address type", append([]byte{5, 1, 0}, connectTo(9, 1, 2, 3, 4)...), false, []byte{5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0}, "handshake/bad_address_type"},
		{"empty domain", append([]byte{5, 1, 0}, connectTo(3, 0)...), false, []byte{5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0}, "handshake/bad_domain"},
		{"domain shorter than declared", append([]byte{5, 1, 0}, 5, 1, 0, 3, 255, 'a', 'b'), true, []byte{5, 0}, "handshake/truncated"},
		{"domain with control bytes", append([]byte{5, 1, 0}, connectTo(3, 3, 'a', 0, 'b')...), false, []byte{5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0}, "handshake/bad_domain"},
		{"domain longer than DNS allows", append([]byte{5, 1, 0}, connectTo(3, append([]byte{254}, []byte(strings.Repeat("a", 254))...)...)...), false, []byte{5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0}, "handshake/bad_domain"},
		{"auth sub-negotiation without auth configured", []byte{5, 1, 2}, false, []byte{5, 0xFF}, "handshake/no_acceptable_method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, testConfig(), Deps{})
			c := dialClient(t, ts.addr)
			c.write(tt.send)
			if tt.halfClose {
				c.conn.CloseWrite()
			}
			got, err := io.ReadAll(c.br)
			require.NoError(t, err, "the server must close, not stall")
			assert.Equal(t, tt.wantReply, nilIfEmpty(got))
			require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
			assert.Equal(t, 1, ts.rec.count(tt.counted), "counted as %s", tt.counted)
		})
	}
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func TestHandshakeTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.HandshakeTimeout = 100 * time.Millisecond
	ts := startServer(t, cfg, Deps{})
	tests := []struct {
		name string
		send []byte
	}{
		{"client sends nothing", nil},
		{"client stops after the greeting", []byte{5, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.rec.count("handshake/timeout")
			c := dialClient(t, ts.addr)
			if tt.send != nil {
				c.write(tt.send)
			}
			_, err := io.ReadAll(c.br)
			require.NoError(t, err, "the server must close the connection itself")
			require.True(t, waitFor(testTimeout, func() bool { return ts.rec.count("handshake/timeout") == before+1 }))
		})
	}
}

func TestClientNotAllowed(t *testing.T) {
	cfg := testConfig()
	cfg.Rules.Clients = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	ts := startServer(t, cfg, Deps{})
	c := dialClient(t, ts.addr)
	c.expectClosed()
	require.True(t, waitFor(testTimeout, func() bool { return ts.rec.count("rejected/client_not_allowed") == 1 }))
}

func TestSessionLimit(t *testing.T) {
	target := echoTarget(t)
	cfg := testConfig()
	cfg.MaxSessions = 1
	ts := startServer(t, cfg, Deps{})
	first := dialClient(t, ts.addr)
	first.greet(methodNoAuth)
	rep, _ := first.request(CommandConnect, spec(target))
	require.Equal(t, ReplySucceeded, rep)

	second := dialClient(t, ts.addr)
	second.expectClosed()
	assert.Equal(t, 1, ts.rec.count("rejected/session_limit"))

	// The slot frees when the first session ends.
	first.conn.Close()
	require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
	third := dialClient(t, ts.addr)
	assert.Equal(t, byte(methodNoAuth), third.greet(methodNoAuth))
}

func TestShutdownDrains(t *testing.T) {
	target := echoTarget(t)
	ts := startServer(t, testConfig(), Deps{})
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	rep, _ := c.request(CommandConnect, spec(target))
	require.Equal(t, ReplySucceeded, rep)
	handshaking := dialClient(t, ts.addr)
	handshaking.write([]byte{5}) // a session still in its handshake
	require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 2 }))

	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- ts.Shutdown(context.Background()) }()

	// The handshaking session is closed at once, and new clients are refused.
	handshaking.expectClosed()
	require.True(t, waitFor(testTimeout, func() bool {
		conn, err := net.Dial("tcp", ts.addr)
		if err == nil {
			conn.Close()
		}
		return err != nil
	}), "listener still accepting during shutdown")

	// The established session still relays, and Shutdown waits for it.
	c.write([]byte("still here"))
	assert.Equal(t, []byte("still here"), c.read(10))
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned %v with a session still open", err)
	default:
	}
	c.conn.CloseWrite()
	_, err := io.ReadAll(c.br)
	require.NoError(t, err)
	select {
	case err := <-shutdownDone:
		require.NoError(t, err)
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return after the last session ended")
	}
}

func TestShutdownCutsShortAfterDeadline(t *testing.T) {
	target := echoTarget(t)
	ts := startServer(t, testConfig(), Deps{})
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	rep, _ := c.request(CommandConnect, spec(target))
	require.Equal(t, ReplySucceeded, rep)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := ts.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	c.expectClosed()
	assert.Equal(t, 0, ts.rec.openSessions())
}

func TestReloadableUsers(t *testing.T) {
	target := echoTarget(t)
	first := testUsers(t)
	h, err := bcrypt.GenerateFromPassword([]byte("n3w"), bcrypt.MinCost)
	require.NoError(t, err)
	second, err := ParseUsers(strings.NewReader("bob:" + string(h) + "\n"))
	require.NoError(t, err)
	users := NewReloadableUsers(first)
	ts := startServer(t, testConfig(), Deps{Credentials: users})

	login := func(user, pass string) byte {
		c := dialClient(t, ts.addr)
		c.greet(methodUserPass)
		status := c.login(user, pass)
		if status == 0 {
			rep, _ := c.request(CommandConnect, spec(target))
			require.Equal(t, ReplySucceeded, rep)
		}
		return status
	}
	assert.Equal(t, byte(0), login("alice", "s3cret"))
	assert.Equal(t, byte(1), login("bob", "n3w"))
	users.Replace(second)
	assert.Equal(t, byte(1), login("alice", "s3cret"), "a removed user is refused at once")
	assert.Equal(t, byte(0), login("bob", "n3w"), "a new user is accepted without a restart")
	assert.Equal(t, 1, users.Len())
}

// TestMalformedRequestCountedUnderItsCommand: a request whose address
// cannot be read is still counted under the command it asked for.
func TestMalformedRequestCountedUnderItsCommand(t *testing.T) {
	tests := []struct {
		name    string
		send    []byte
		counted string
	}{
		{"connect, bad address type", []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, "request/connect/address_type_not_supported"},
		{"connect, bad domain", []byte{5, 1, 0, 3, 3, 'a', 0, 'b', 0, 80}, "request/connect/host_unreachable"},
		{"bind, bad address type", []byte{5, 2, 0, 9, 1, 2, 3, 4, 0, 80}, "request/bind/address_type_not_supported"},
		{"udp associate, bad domain", []byte{5, 3, 0, 3, 0, 0, 80}, "request/udp_associate/host_unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, testConfig(), Deps{})
			c := dialClient(t, ts.addr)
			c.greet(methodNoAuth)
			c.write(tt.send)
			_, err := io.ReadAll(c.br)
			require.NoError(t, err)
			require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
			assert.Equal(t, 1, ts.rec.count(tt.counted), "counted as %s", tt.counted)
			assert.Zero(t, ts.rec.count("request/unknown/address_type_not_supported")+ts.rec.count("request/unknown/host_unreachable"))
		})
	}
}
