package proxy

import (
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Bounds of the failed-login limiter.
const (
	// maxLimitedSources bounds the sources the limiter remembers (about
	// 150 bytes each), so a flood of source addresses cannot grow memory;
	// the least recently seen source is forgotten first.
	maxLimitedSources = 16384
	// limitedIPv6Bits groups IPv6 sources by /64: a single host is commonly
	// given a whole /64, so counting per address would let it rotate.
	limitedIPv6Bits = 64
	// refusalLogInterval is how often a source that stays over its limit
	// is logged again, with the number of logins refused meanwhile.
	refusalLogInterval = time.Minute
)

// failureLimiter rate-limits failed logins per source with a token bucket:
// each source starts with burst tokens, regains rate tokens a second, and a
// password check costs one token. A login that succeeds gets its token
// back, so only failures drain the bucket. Taking the token before the
// check (not after a failure) bounds the checks one source can have running
// at once by the burst.
type failureLimiter struct {
	rate  float64 // tokens regained per second
	burst float64
	now   func() time.Time

	// mu guards sources.
	mu      sync.Mutex
	sources *simplelru.LRU[netip.Prefix, *failureBucket]
}

// failureBucket is one source's state.
type failureBucket struct {
	tokens  float64
	updated time.Time
	// refused counts logins refused since the last log line about this
	// source; loggedAt is when that line was written (zero: never).
	refused  int
	loggedAt time.Time
}

// newFailureLimiter allows burst failures in a row and perMinute a minute
// after that; perMinute <= 0 returns nil, which allows everything.
func newFailureLimiter(perMinute, burst int, now func() time.Time) *failureLimiter {
	if perMinute <= 0 {
		return nil
	}
	sources, _ := simplelru.NewLRU[netip.Prefix, *failureBucket](maxLimitedSources, nil)
	return &failureLimiter{
		rate:    float64(perMinute) / 60,
		burst:   float64(burst),
		now:     now,
		sources: sources,
	}
}

// sourceKey is the unit the limiter counts: an IPv4 address, or the /64 of
// an IPv6 address.
func sourceKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := ip.BitLen()
	if ip.Is6() {
		bits = limitedIPv6Bits
	}
	p, _ := ip.Prefix(bits)
	return p
}

// reserve takes a token for one password check from ip's bucket. When the
// bucket is empty it returns false, and logRefused > 0 when the refusal
// should be logged now: the number of refusals the line reports (this one
// included). A nil limiter always allows.
func (l *failureLimiter) reserve(ip netip.Addr) (ok bool, logRefused int) {
	if l == nil {
		return true, 0
	}
	key := sourceKey(ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.sources.Get(key)
	if !found {
		b = &failureBucket{tokens: l.burst, updated: now}
		l.sources.Add(key, b)
	}
	l.refillLocked(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	b.refused++
	if !b.loggedAt.IsZero() && now.Sub(b.loggedAt) < refusalLogInterval {
		return false, 0
	}
	n := b.refused
	b.refused = 0
	b.loggedAt = now
	return false, n
}

// refund gives back the token of a login that succeeded. A source whose
// bucket is full again is forgotten: it has nothing left to remember.
func (l *failureLimiter) refund(ip netip.Addr) {
	if l == nil {
		return
	}
	key := sourceKey(ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.sources.Peek(key)
	if !found {
		return
	}
	l.refillLocked(b, now)
	b.tokens = min(b.tokens+1, l.burst)
	if b.tokens >= l.burst && b.refused == 0 {
		l.sources.Remove(key)
	}
}

// refillLocked adds the tokens regained since b was last updated.
func (l *failureLimiter) refillLocked(b *failureBucket, now time.Time) {
	if elapsed := now.Sub(b.updated); elapsed > 0 {
		b.tokens = min(b.tokens+elapsed.Seconds()*l.rate, l.burst)
	}
	b.updated = now
}

// len returns the number of sources remembered.
func (l *failureLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sources.Len()
}
