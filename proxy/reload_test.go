package proxy

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// connectReply runs one CONNECT to target through ts and returns the reply.
func connectReply(t *testing.T, ts *testServer, target netip.AddrPort) Reply {
	t.Helper()
	c := dialClient(t, ts.addr)
	require.Equal(t, byte(methodNoAuth), c.greet(methodNoAuth))
	rep, _ := c.request(CommandConnect, spec(target))
	return rep
}

func TestReconfigure(t *testing.T) {
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	tests := []struct {
		name    string
		start   func(*Config)
		before  func(t *testing.T, ts *testServer, target netip.AddrPort)
		change  func(*Config)
		wantErr string
		after   func(t *testing.T, ts *testServer, target netip.AddrPort)
	}{
		{
			name:  "clients rule takes effect for the next connection",
			start: func(c *Config) { c.Rules.Clients = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} },
			before: func(t *testing.T, ts *testServer, _ netip.AddrPort) {
				dialClient(t, ts.addr).expectClosed()
			},
			change: func(c *Config) { c.Rules.Clients = []netip.Prefix{loopback} },
			after: func(t *testing.T, ts *testServer, target netip.AddrPort) {
				assert.Equal(t, ReplySucceeded, connectReply(t, ts, target))
			},
		},
		{
			name: "destination deny takes effect",
			before: func(t *testing.T, ts *testServer, target netip.AddrPort) {
				assert.Equal(t, ReplySucceeded, connectReply(t, ts, target))
			},
			change: func(c *Config) { c.Rules.DenyDestinations = []DestRule{{Network: loopback}} },
			after: func(t *testing.T, ts *testServer, target netip.AddrPort) {
				assert.Equal(t, ReplyNotAllowed, connectReply(t, ts, target))
			},
		},
		{
			name:  "a raised session cap admits more",
			start: func(c *Config) { c.MaxSessions = 1 },
			before: func(t *testing.T, ts *testServer, target netip.AddrPort) {
				require.Equal(t, ReplySucceeded, connectReply(t, ts, target)) // held open until cleanup
				dialClient(t, ts.addr).expectClosed()
			},
			change: func(c *Config) { c.MaxSessions = 2 },
			after: func(t *testing.T, ts *testServer, target netip.AddrPort) {
				assert.Equal(t, ReplySucceeded, connectReply(t, ts, target))
				dialClient(t, ts.addr).expectClosed()
				assert.Equal(t, 2, ts.rec.count("rejected/session_limit"))
			},
		},
		{
			name:  "a lowered session cap closes nothing and refuses new sessions",
			start: func(c *Config) { c.MaxSessions = 2 },
			before: func(t *testing.T, ts *testServer, target netip.AddrPort) {
				require.Equal(t, ReplySucceeded, connectReply(t, ts, target))
				require.Equal(t, ReplySucceeded, connectReply(t, ts, target))
			},
			change: func(c *Config) { c.MaxSessions = 1 },
			after: func(t *testing.T, ts *testServer, _ netip.AddrPort) {
				dialClient(t, ts.addr).expectClosed()
				assert.Equal(t, 2, ts.rec.openSessions())
			},
		},
		{
			name:    "an invalid config changes nothing",
			change:  func(c *Config) { c.Rules.DenyDestinations = []DestRule{{Network: loopback}}; c.HandshakeTimeout = 0 },
			wantErr: "handshake timeout",
			after: func(t *testing.T, ts *testServer, target netip.AddrPort) {
				assert.Equal(t, ReplySucceeded, connectReply(t, ts, target))
			},
		},
		{
			name: "external IP needs a restart",
			change: func(c *Config) {
				c.ExternalIP = netip.MustParseAddr("127.0.0.2")
				c.Rules.DenyDestinations = []DestRule{{Network: loopback}}
			},
			wantErr: "without a restart",
			after: func(t *testing.T, ts *testServer, target netip.AddrPort) {
				assert.Equal(t, ReplySucceeded, connectReply(t, ts, target))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := echoTarget(t)
			cfg := testConfig()
			if tt.start != nil {
				tt.start(&cfg)
			}
			ts := startServer(t, cfg, Deps{})
			if tt.before != nil {
				tt.before(t, ts, target)
			}
			next := cfg
			tt.change(&next)
			err := ts.Reconfigure(next, nil)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
			}
			tt.after(t, ts, target)
		})
	}
}

// TestReconfigureFilters: a new filter table applies to the next CONNECT
// to its port; a reload whose table clashes is refused before it reaches
// the server, and the old table stays.
func TestReconfigureFilters(t *testing.T) {
	target := echoTarget(t)
	ts := startServer(t, testConfig(), Deps{})
	echo := func() string {
		t.Helper()
		c := dialClient(t, ts.addr)
		require.Equal(t, byte(methodNoAuth), c.greet(methodNoAuth))
		rep, _ := c.request(CommandConnect, spec(target))
		require.Equal(t, ReplySucceeded, rep)
		c.write([]byte("abc"))
		return string(c.read(3))
	}
	require.Equal(t, "abc", echo())

	var table Filters
	require.NoError(t, table.Register(&upperFilter{}, target.Port()))
	require.NoError(t, ts.Reconfigure(testConfig(), &table))
	assert.Equal(t, "ABC", echo())

	// A registration made after the table was handed over does not reach
	// the server: it took a copy.
	require.NoError(t, table.Register(namedFilter("late"), target.Port()+1))
	assert.Equal(t, "ABC", echo())

	// The reload path: build the next table, and only a table that built
	// is applied. The clash keeps the running one.
	reload := func(register func(*Filters) error) error {
		var next Filters
		if err := register(&next); err != nil {
			return err
		}
		return ts.Reconfigure(testConfig(), &next)
	}
	err := reload(func(next *Filters) error {
		if err := next.Register(namedFilter("mms"), target.Port()); err != nil {
			return err
		}
		return next.Register(namedFilter("line"), target.Port())
	})
	require.ErrorIs(t, err, ErrFilterExists)
	assert.Equal(t, "ABC", echo(), "a refused table leaves the old one")

	require.NoError(t, reload(func(*Filters) error { return nil }))
	assert.Equal(t, "abc", echo(), "an empty table removes the filter")
}
