package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/leases"
)

// TestLogFields logs through the daemon's own loggers and reads the lines
// back: durations, lease keys and reasons come out as a log search wants
// them, in both formats.
func TestLogFields(t *testing.T) {
	key := leases.Key{Client: netip.MustParseAddr("10.0.0.5"), User: "alice", Port: 7000}
	attrs := []any{
		"duration", 1500 * time.Millisecond,
		"key", key,
		"anonymous", leases.Key{Client: netip.MustParseAddr("10.0.0.6"), Port: 7001},
		"reason", leases.ReasonBufferFull,
		"failure", leases.FailNoPort,
		"kind", leases.KindAnnounced,
		"event", leases.EventEvict,
	}
	t.Run("json", func(t *testing.T) {
		var buf bytes.Buffer
		log, err := newLogger(&buf, "json", slog.LevelInfo)
		require.NoError(t, err)
		log.Info("probe", attrs...)
		var rec map[string]any
		require.NoError(t, json.Unmarshal(buf.Bytes(), &rec), buf.String())
		assert.Equal(t, 1.5, rec["duration"], "seconds, as a number")
		assert.Equal(t, "10.0.0.5/alice/7000", rec["key"])
		assert.Equal(t, "10.0.0.6//7001", rec["anonymous"])
		assert.Equal(t, "buffer_full", rec["reason"])
		assert.Equal(t, "no_port", rec["failure"])
		assert.Equal(t, "announced", rec["kind"])
		assert.Equal(t, "evict", rec["event"])
	})
	t.Run("text", func(t *testing.T) {
		var buf bytes.Buffer
		log, err := newLogger(&buf, "text", slog.LevelInfo)
		require.NoError(t, err)
		log.Info("probe", attrs...)
		line := buf.String()
		for _, want := range []string{" duration=1.5s ", " key=10.0.0.5/alice/7000 ", " anonymous=10.0.0.6//7001 ",
			" reason=buffer_full ", " failure=no_port ", " kind=announced ", " event=evict"} {
			assert.Contains(t, line, want)
		}
	})
}
