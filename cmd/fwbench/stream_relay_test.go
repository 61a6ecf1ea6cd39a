package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/testbin"
)

// TestStreamThroughTheRelays runs a step through both minimal relays, as
// the scenario starts them: every player's stream arrives whole, and in
// per-player mode each player is sent to at an in socket of its own.
func TestStreamThroughTheRelays(t *testing.T) {
	bin := testbin.Build(t, "../udprelay-min")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	relays, err := startRelays(ctx, bin)
	for _, r := range relays {
		t.Cleanup(r.proc.stop)
	}
	require.NoError(t, err)
	require.Len(t, relays, 2)
	b := &bench{res: newResults(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	sender, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer sender.Close()
	const players = 3
	ps, rx := streamPlayers(t, players)
	cfg := streamConfig{bitrate: 1_000_000, size: 1200, warmup: 50 * time.Millisecond, window: 200 * time.Millisecond, bound: time.Second}
	for gen, s := range relays {
		t.Run(s.run.label, func(t *testing.T) {
			r, err := b.streamStep(ctx, s, ps, rx, sender, cfg, uint32(gen+1))
			require.NoError(t, err)
			assert.Positive(t, r.sent)
			assert.Zero(t, r.lost+r.dups+r.errors)
			assert.True(t, r.hasCPU, "the relay's CPU is read")
			dests := map[netip.AddrPort]bool{}
			for _, p := range ps {
				dests[p.dest] = true
			}
			if s.run.mode == modeRelayPerPlayer {
				assert.Len(t, dests, players, "an in socket per player")
				assert.False(t, dests[s.relayIn], "the answer's port, not -in's")
			} else {
				assert.Equal(t, map[netip.AddrPort]bool{s.relayIn: true}, dests, "one in socket for all")
			}
		})
	}
}
