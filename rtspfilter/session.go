package rtspfilter

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"fwproxy/internal/expect"
)

// streamGroup is the lease group of one set-up stream, with the URI its
// SETUP named, so that a TEARDOWN of that stream alone releases only it.
type streamGroup struct {
	uri   string
	group *expect.UDPGroup
}

// pendingSetup is a SETUP forwarded to the server and not yet answered.
type pendingSetup struct {
	uri     string
	cseq    string
	session string // the request's Session id; "" for a new session
	leased  []leasedSpec
	groups  []*expect.UDPGroup // parallel to leased
	mode    SetupMode
}

func (p *pendingSetup) release() {
	for _, g := range p.groups {
		g.Release()
	}
}

// maxPending bounds the SETUPs awaiting an answer on one connection: the
// ones holding groups are bounded by MaxGroups, this bounds the others.
const maxPending = 32

// sessionID is a Session header's id, without its ";timeout=" (RFC 2326
// §12.37).
func sessionID(v string) string {
	id, _, _ := strings.Cut(v, ";")
	return strings.TrimSpace(id)
}

// onRequest acts on a client request. It returns the head to forward
// (h.raw when unchanged), or an answer of the proxy's own to send the
// client instead.
func (c *Connection) onRequest(ctx context.Context, h *head) (out, answer []byte) {
	switch methodOf(h.method) {
	case MethodSetup:
		return c.onSetup(ctx, h)
	case MethodTeardown:
		if v, ok := h.get("Session"); ok {
			c.teardown(sessionID(v), h.uri)
		}
	}
	return h.raw, nil
}

// teardown releases what a TEARDOWN of uri ends in a session: the
// streams set up at that URI when there are any (a TEARDOWN of one track
// leaves the others playing, RFC 2326 §10.7), else the whole session (the
// aggregate URI). Released groups linger, so a SETUP of the same client
// ports soon after (the next playlist item) gets them back.
func (c *Connection) teardown(id, uri string) {
	c.mu.Lock()
	gs := c.sessions[id]
	var gone, kept []streamGroup
	for _, sg := range gs {
		if sg.uri == uri {
			gone = append(gone, sg)
		} else {
			kept = append(kept, sg)
		}
	}
	if len(gone) == 0 {
		gone, kept = gs, nil
	}
	if len(kept) == 0 {
		delete(c.sessions, id)
	} else {
		c.sessions[id] = kept
	}
	c.groups -= len(gone)
	c.mu.Unlock()
	for _, sg := range gone {
		sg.group.Release()
	}
	if len(gone) > 0 {
		c.log.Debug("rtsp teardown", "client", c.conn.Client, "server", c.conn.Target, "session", id, "groups", len(gone), "left", len(kept))
	}
}

// onSetup rewrites a SETUP's Transport. A SETUP that would leave the
// server nothing the proxy can carry is answered 461 Unsupported
// Transport by the proxy and never forwarded: players (ffmpeg, gortsplib's
// client) take 461 as "try TCP interleaved", which the proxy carries on
// the control connection; forwarding it unrewritten would make the server
// send UDP to a port the client does not hold.
func (c *Connection) onSetup(ctx context.Context, h *head) (out, answer []byte) {
	cseq, _ := h.get("CSeq")
	sess, _ := h.get("Session")
	p := &pendingSetup{uri: h.uri, cseq: cseq, session: sessionID(sess), mode: SetupUnfiltered}
	// refuse answers 461; pr is counted unless it is NumProblems (the
	// dropped specs were counted already).
	refuse := func(pr Problem, err error) ([]byte, []byte) {
		if pr < NumProblems {
			c.f.obs.Problem(DirClientToServer, pr, err)
		}
		p.release()
		c.unreserve(len(p.groups))
		c.f.obs.Setup(SetupNone, OutcomeProxyRefused)
		level := slog.LevelWarn
		if c.refusals++; c.refusals > 1 {
			level = slog.LevelDebug
		}
		c.log.Log(ctx, level, "rtsp: SETUP refused with 461", "client", c.conn.Client, "server", c.conn.Target, "uri", h.uri, "refusals", c.refusals, "err", err)
		return nil, statusMessage(h.version, 461, "Unsupported Transport", cseq)
	}
	c.mu.Lock()
	if len(c.pending) >= maxPending {
		c.mu.Unlock()
		return refuse(ProblemGroupLimit, fmt.Errorf("rtspfilter: %d SETUPs unanswered", maxPending))
	}
	// A SETUP outside the connection's sessions that leases starts
	// another session holding leases: MaxSessions bounds those. TCP and
	// multicast specs hold nothing and pass whatever the count.
	_, known := c.sessions[p.session]
	sessions := len(c.sessions)
	for _, q := range c.pending {
		if _, ok := c.sessions[q.session]; !ok && len(q.groups) > 0 {
			sessions++
		}
	}
	c.mu.Unlock()
	sessionFull := !known && sessions >= c.f.cfg.MaxSessions

	var repl []replacement
	for i, f := range h.fields {
		if !equalFold(f.name, "Transport") {
			continue
		}
		rw, err := rewriteTransport(f.value, c.externalIP(), c.conn.Client.Addr().Unmap(), func(announced []uint16) ([]uint16, error) {
			if sessionFull {
				return nil, &SpecError{Problem: ProblemSessionLimit, Err: fmt.Errorf("rtspfilter: %d sessions holding leases on one connection", c.f.cfg.MaxSessions)}
			}
			g, err := c.lease(ctx, announced)
			if err != nil {
				return nil, err
			}
			p.groups = append(p.groups, g)
			return g.Ports(), nil
		})
		if err != nil {
			return refuse(ProblemBadTransport, err)
		}
		for _, d := range rw.dropped {
			c.f.obs.Problem(DirClientToServer, d.Problem, d)
			c.log.Warn("rtsp: transport dropped from SETUP", "client", c.conn.Client, "server", c.conn.Target, "problem", d.Problem.String(), "err", d)
		}
		for a := range NumTransportActions {
			for range rw.actions[a] {
				c.f.obs.Transport(a)
			}
		}
		for range rw.destinations {
			c.f.obs.DestinationRewritten()
		}
		if rw.kept == 0 {
			return refuse(NumProblems, fmt.Errorf("rtspfilter: no transport of %q can pass the proxy", clip([]byte(f.value))))
		}
		p.leased = append(p.leased, rw.leased...)
		if rw.actions[TransportRewritten] > 0 || rw.actions[TransportDropped] > 0 {
			repl = append(repl, replacement{index: i, value: rw.value})
		}
	}
	if len(p.groups) > 0 {
		p.mode = SetupJoined
		for _, g := range p.groups {
			if g.Mode() != expect.Joined {
				p.mode = SetupAnnounced
			}
		}
	}
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.pending = append(c.pending, p)
	}
	c.mu.Unlock()
	if closed {
		// Never forward a SETUP whose leases are gone.
		return refuse(NumProblems, ErrClosed)
	}
	if len(repl) == 0 {
		return h.raw, nil
	}
	return appendHeadWith(nil, h, repl), nil
}

// lease takes the group for one spec's announced ports, within
// MaxGroups.
func (c *Connection) lease(ctx context.Context, announced []uint16) (*expect.UDPGroup, error) {
	c.mu.Lock()
	if c.groups >= c.f.cfg.MaxGroups {
		c.mu.Unlock()
		return nil, &SpecError{Problem: ProblemGroupLimit, Err: fmt.Errorf("rtspfilter: %d lease groups on one connection", c.f.cfg.MaxGroups)}
	}
	c.groups++
	c.mu.Unlock()
	actx, cancel := context.WithTimeout(ctx, c.f.cfg.AcquireTimeout)
	defer cancel()
	// The server may send from any source port (server_port is only
	// its intent), so its IP is what is permitted; a source it names
	// in the reply is added then.
	g, err := expect.ExpectGroup(actx, c.f.leases, expect.GroupWant{
		Client: c.conn.Client.Addr(), User: c.conn.User, Session: c.conn.Session,
		Ports: announced, Peers: []netip.Addr{c.conn.Target.Addr()},
	})
	if err != nil {
		c.unreserve(1)
		return nil, &SpecError{Problem: ProblemLeaseFailed, Err: err}
	}
	return g, nil
}

func (c *Connection) unreserve(n int) {
	c.mu.Lock()
	c.groups -= n
	c.mu.Unlock()
}

// onResponse acts on a server response: a SETUP's answer gets the
// client's ports back. It returns the head to forward.
func (c *Connection) onResponse(h *head) []byte {
	cseq, _ := h.get("CSeq")
	p := c.takePending(cseq)
	if p == nil {
		return h.raw
	}
	if h.code < 200 || h.code > 299 {
		p.release()
		c.unreserve(len(p.groups))
		c.f.obs.Setup(p.mode, OutcomeServerRefused)
		return h.raw
	}
	var repl []replacement
	chosen := -1
	var sources []netip.Addr
	for i, f := range h.fields {
		if !equalFold(f.name, "Transport") || len(p.leased) == 0 {
			continue
		}
		rt, err := restoreTransport(f.value, p.leased)
		if err != nil || rt.unmatched {
			c.f.obs.Problem(DirServerToClient, ProblemReplyUnmatched, fmt.Errorf("rtspfilter: SETUP reply transport %q: %v", clip([]byte(f.value)), err))
		}
		if err != nil {
			continue
		}
		if rt.chosen >= 0 && chosen < 0 {
			chosen, sources = rt.chosen, rt.sources
		}
		repl = append(repl, replacement{index: i, value: rt.value})
	}
	id := p.session
	if v, ok := h.get("Session"); ok {
		id = sessionID(v)
	}
	mode := p.mode
	var keep *expect.UDPGroup
	for i, g := range p.groups {
		if i == chosen {
			keep = g
			continue
		}
		g.Release()
	}
	if keep == nil {
		mode = SetupUnfiltered
	}
	c.mu.Lock()
	c.groups -= len(p.groups)
	if keep != nil && !c.closed {
		c.groups++
		c.sessions[id] = c.replaceLocked(c.sessions[id], streamGroup{uri: p.uri, group: keep})
		keep = nil
	}
	c.mu.Unlock()
	if keep != nil {
		keep.Release() // closed meanwhile
	}
	c.f.obs.Setup(mode, OutcomeAccepted)
	if chosen >= 0 {
		l := p.leased[chosen]
		g := p.groups[chosen]
		for _, ip := range sources {
			g.AllowPeer(ip)
		}
		c.log.Info("rtsp setup", "client", c.conn.Client, "server", c.conn.Target, "session", id,
			"client_ports", l.announced, "external_ports", l.external, "mode", mode.String())
	}
	if len(repl) == 0 {
		return h.raw
	}
	return appendHeadWith(nil, h, repl)
}

// replaceLocked adds g to a session's groups, releasing an older group of
// the same ports (a SETUP again for the same stream): the lease is shared,
// so the new holder carries on.
func (c *Connection) replaceLocked(gs []streamGroup, g streamGroup) []streamGroup {
	keys := g.group.Keys()
	out := gs[:0]
	for _, old := range gs {
		if slices.Equal(old.group.Keys(), keys) {
			old.group.Release()
			c.groups--
			continue
		}
		out = append(out, old)
	}
	return append(out, g)
}

// takePending removes the SETUP a response with cseq answers: the one
// with that CSeq, or the oldest when the server sends none.
func (c *Connection) takePending(cseq string) *pendingSetup {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		return nil
	}
	i := 0
	if cseq != "" {
		i = slices.IndexFunc(c.pending, func(p *pendingSetup) bool { return p.cseq == cseq })
		if i < 0 {
			return nil
		}
	}
	p := c.pending[i]
	c.pending = slices.Delete(c.pending, i, i+1)
	return p
}
