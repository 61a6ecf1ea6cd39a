package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestFailureLimiter(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	// step is one thing that happens to the limiter; want is reserve's
	// result (ignored for refunds and clock moves).
	type step struct {
		wait       time.Duration
		ip         netip.Addr
		refund     bool
		want       bool
		wantLogged int
	}
	reserve := func(ip netip.Addr, want bool, logged int) step {
		return step{ip: ip, want: want, wantLogged: logged}
	}
	tests := []struct {
		name             string
		perMinute, burst int
		steps            []step
	}{
		{"burst then refused", 60, 3, []step{
			reserve(a, true, 0), reserve(a, true, 0), reserve(a, true, 0),
			reserve(a, false, 1), reserve(a, false, 0),
		}},
		{"sources are counted apart", 60, 1, []step{
			reserve(a, true, 0), reserve(a, false, 1), reserve(b, true, 0), reserve(b, false, 1),
		}},
		{"refills at the rate", 60, 2, []step{
			reserve(a, true, 0), reserve(a, true, 0), reserve(a, false, 1),
			{wait: 999 * time.Millisecond, ip: a, want: false},
			{wait: time.Millisecond, ip: a, want: true},
			reserve(a, false, 0),
		}},
		{"refill stops at the burst", 60, 2, []step{
			reserve(a, true, 0), reserve(a, true, 0),
			{wait: time.Hour, ip: a, want: true}, reserve(a, true, 0), reserve(a, false, 1),
		}},
		{"a success gives its token back", 60, 1, []step{
			reserve(a, true, 0), {ip: a, refund: true}, reserve(a, true, 0), reserve(a, false, 1),
		}},
		{"refusals are logged once a minute with their count", 60, 1, []step{
			reserve(a, true, 0), reserve(a, false, 1),
			{wait: 900 * time.Millisecond, ip: a, want: false}, reserve(a, false, 0), reserve(a, false, 0),
			{wait: refusalLogInterval - 900*time.Millisecond, ip: a, want: true},
			// The bucket refilled completely, then ran dry again.
			reserve(a, false, 4),
		}},
		{"an IPv6 /64 is one source", 60, 1, []step{
			reserve(netip.MustParseAddr("2001:db8:1:2::1"), true, 0),
			reserve(netip.MustParseAddr("2001:db8:1:2:ffff::9"), false, 1),
			reserve(netip.MustParseAddr("2001:db8:1:3::1"), true, 0),
		}},
		{"an IPv4-mapped address is its IPv4 address", 60, 1, []step{
			reserve(a, true, 0), reserve(netip.MustParseAddr("::ffff:192.0.2.1"), false, 1),
		}},
		{"disabled allows everything", 0, 0, []step{
			reserve(a, true, 0), reserve(a, true, 0), reserve(a, true, 0),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			l := newFailureLimiter(tt.perMinute, tt.burst, clock.now)
			for i, s := range tt.steps {
				clock.advance(s.wait)
				if s.refund {
					l.refund(s.ip)
					continue
				}
				ok, logged := l.reserve(s.ip)
				assert.Equal(t, s.want, ok, "step %d: allowed", i)
				assert.Equal(t, s.wantLogged, logged, "step %d: refusals to log", i)
			}
		})
	}
}

// TestFailureLimiterBoundsSources checks that a flood of source addresses
// cannot grow the limiter past its bound, and that successful logins leave
// nothing behind.
func TestFailureLimiterBoundsSources(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := newFailureLimiter(10, 5, clock.now)
	ip := netip.MustParseAddr("10.0.0.0")
	for range maxLimitedSources + 1000 {
		ok, _ := l.reserve(ip)
		require.True(t, ok)
		ip = ip.Next()
	}
	assert.Equal(t, maxLimitedSources, l.len())

	l = newFailureLimiter(10, 5, clock.now)
	for range 100 {
		ok, _ := l.reserve(ip)
		require.True(t, ok)
		l.refund(ip)
		ip = ip.Next()
	}
	assert.Zero(t, l.len(), "sources that only succeeded are forgotten")
}
