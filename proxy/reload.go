package proxy

import (
	"context"
	"fmt"

	socks5 "github.com/armon/go-socks5"
)

// liveConfig is what Reconfigure swaps as one piece: a session reads it at
// each step (admission, handshake deadline, rules, dial, filter choice), so
// a reload applies to every step that starts after it and never to half a
// step.
type liveConfig struct {
	cfg     Config
	filters map[uint16]Filter
}

// cfg returns the current settings. Callers must not modify them.
func (s *Server) cfg() *Config { return &s.live.Load().cfg }

// filter returns the filter registered for a destination port, or nil.
func (s *Server) filter(port uint16) Filter { return s.live.Load().filters[port] }

// Reconfigure replaces the server's settings and filters while it serves.
// Sessions already past a step keep what they got (an open CONNECT keeps
// its filter; a lowered MaxSessions closes no session, it refuses new ones
// until fewer are open). ExternalIP cannot change: BIND listeners and
// outgoing connections are bound to it, so it needs a new Server. On error
// nothing changes.
//
// filters is the new table (nil: none), copied; build it with
// Filters.Register, which already refused any clash, so a table that
// could not be built is never half applied.
func (s *Server) Reconfigure(cfg Config, filters *Filters) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("proxy: reconfigure: %w", err)
	}
	fs := filters.clone()
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.cfg().ExternalIP; cfg.ExternalIP != old {
		return fmt.Errorf("proxy: reconfigure: external IP cannot change from %v to %v without a restart", old, cfg.ExternalIP)
	}
	cfg.Rules = cfg.Rules.normalised()
	s.live.Store(&liveConfig{cfg: cfg, filters: fs})
	return nil
}

// takeSlot counts a new session against MaxSessions, or reports that the
// server is full. A counter rather than a channel of tokens, so the cap
// can change while sessions hold slots.
func (s *Server) takeSlot() bool {
	if s.active.Add(1) > int64(s.cfg().MaxSessions) {
		s.active.Add(-1)
		return false
	}
	return true
}

// releaseSlot gives back a slot taken by takeSlot.
func (s *Server) releaseSlot() { s.active.Add(-1) }

// liveRules judges requests by the current Config.Rules when Deps.RuleSet
// is not set.
type liveRules struct{ s *Server }

var _ socks5.RuleSet = liveRules{}

func (r liveRules) Allow(ctx context.Context, req *socks5.Request) (context.Context, bool) {
	return r.s.cfg().Rules.Allow(ctx, req)
}
