package proxy

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

func TestConnectExpects(t *testing.T) {
	alice := expectKey{client: netip.MustParseAddr("192.0.2.1"), user: "alice"}
	bob := expectKey{client: netip.MustParseAddr("192.0.2.1"), user: "bob"}
	dst := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), port) }
	f := namedFilter("mms")
	tests := []struct {
		name string
		run  func(t *testing.T, e *connectExpects, advance func(time.Duration))
		want map[string]int // recorder counts
	}{
		{"used once", func(t *testing.T, e *connectExpects, _ func(time.Duration)) {
			require.NoError(t, e.add(alice, dst(8080), f))
			assert.Nil(t, e.take(bob, dst(8080)), "another user of the same IP does not match")
			assert.Nil(t, e.take(alice, dst(8081)), "another port does not match")
			assert.Equal(t, Filter(f), e.take(alice, dst(8080)))
			assert.Nil(t, e.take(alice, dst(8080)), "used up")
		}, map[string]int{"expect/expected": 1, "expect/used": 1}},
		{"expires", func(t *testing.T, e *connectExpects, advance func(time.Duration)) {
			require.NoError(t, e.add(alice, dst(8080), f))
			advance(ConnectExpectTTL)
			assert.Nil(t, e.take(alice, dst(8080)))
			assert.Zero(t, e.total)
		}, map[string]int{"expect/expected": 1, "expect/expired": 1}},
		{"capped per client, renewing is free", func(t *testing.T, e *connectExpects, _ func(time.Duration)) {
			for p := range uint16(MaxConnectExpectsPerClient) {
				require.NoError(t, e.add(alice, dst(9000+p), f))
			}
			require.NoError(t, e.add(alice, dst(9000), f), "the same destination again renews it")
			err := e.add(alice, dst(1), f)
			require.ErrorIs(t, err, ErrConnectExpectLimit)
			assert.ErrorContains(t, err, fmt.Sprintf("for this client (%d)", MaxConnectExpectsPerClient))
			require.NoError(t, e.add(bob, dst(1), f), "another client has its own share")
			assert.Equal(t, MaxConnectExpectsPerClient+1, e.total)
		}, map[string]int{"expect/expected": MaxConnectExpectsPerClient + 2, "expect/refused_client_limit": 1}},
		{"capped in all; expired entries make room", func(t *testing.T, e *connectExpects, advance func(time.Duration)) {
			for i := range MaxConnectExpects {
				k := expectKey{client: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})}
				require.NoError(t, e.add(k, dst(1), f))
			}
			require.ErrorIs(t, e.add(alice, dst(1), f), ErrConnectExpectLimit)
			advance(ConnectExpectTTL)
			require.NoError(t, e.add(alice, dst(1), f))
			assert.Equal(t, 1, e.total)
		}, map[string]int{"expect/expected": MaxConnectExpects + 1, "expect/refused_table_full": 1, "expect/expired": MaxConnectExpects}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			var mu sync.Mutex
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			e := newConnectExpects(rec, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
			tt.run(t, e, func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() })
			for k, v := range tt.want {
				assert.Equal(t, v, rec.count(k), k)
			}
		})
	}
}

// redirectFilter upper-cases the client's bytes like upperFilter and, on
// its first session, expects the client's next CONNECT to next.
type redirectFilter struct {
	upperFilter
	next netip.AddrPort
	once sync.Once
	err  chan error
}

func (f *redirectFilter) NewSession(ctx context.Context, info SessionInfo) (FilterSession, error) {
	f.once.Do(func() { f.err <- info.Connects.ExpectConnect(f.next) })
	return f.upperFilter.NewSession(ctx, info)
}

// TestExpectedConnectRunsThroughTheFilter: through the real server, the
// expected CONNECT to a port without a filter runs through the filter that
// expected it, once, and only for the client that was expected.
func TestExpectedConnectRunsThroughTheFilter(t *testing.T) {
	first, next := echoTarget(t), echoTarget(t)
	f := &redirectFilter{next: next, err: make(chan error, 1)}
	var table Filters
	require.NoError(t, table.Register(f, first.Port()))
	h, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	require.NoError(t, err)
	users, err := ParseUsers(strings.NewReader("alice:" + string(h) + "\nbob:" + string(h) + "\n"))
	require.NoError(t, err)
	ts := startServer(t, testConfig(), Deps{Credentials: users, Filters: &table})
	echo := func(user, pass string, target netip.AddrPort) string {
		t.Helper()
		c := dialClient(t, ts.addr)
		c.greet(methodUserPass)
		require.Equal(t, byte(0), c.login(user, pass))
		rep, _ := c.request(CommandConnect, spec(target))
		require.Equal(t, ReplySucceeded, rep)
		c.write([]byte("abc"))
		require.NoError(t, c.conn.CloseWrite())
		got, err := io.ReadAll(c.br)
		require.NoError(t, err)
		return string(got)
	}
	assert.Equal(t, "ABC", echo("alice", "s3cret", first))
	require.NoError(t, <-f.err)
	assert.Equal(t, "abc", echo("bob", "s3cret", next), "another user is not the expected client")
	assert.Equal(t, "ABC", echo("alice", "s3cret", next), "the expected CONNECT runs through the filter")
	assert.Equal(t, "abc", echo("alice", "s3cret", next), "once")
	assert.Equal(t, 1, ts.rec.count("expect/used"))
}
