package metrics

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/leases"
)

func TestRegistryLints(t *testing.T) {
	reg := NewRegistry("test")
	s := NewSocks(reg)
	// Touch every vector so its series exist for the linter.
	s.ConnectionRejected("session_limit")
	s.HandshakeFailed("timeout")
	s.Authenticated("no_auth", true)
	s.Request("connect", "succeeded", time.Millisecond, time.Millisecond)
	s.Relayed("client_to_target", 1)
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestSocksSeries(t *testing.T) {
	reg := NewRegistry("test")
	s := NewSocks(reg)
	s.SessionsChanged(1)
	s.SessionsChanged(1)
	s.SessionsChanged(-1)
	s.Authenticated("username_password", false)
	s.Request("connect", "connection_refused", time.Millisecond, 2*time.Millisecond)
	s.Relayed("client_to_target", 10)
	s.Relayed("target_to_client", 32)

	expected := `
# HELP fwproxy_socks_sessions_active Client connections being served.
# TYPE fwproxy_socks_sessions_active gauge
fwproxy_socks_sessions_active 1
# HELP fwproxy_tcp_relayed_bytes_total Bytes relayed on CONNECT and BIND sessions, by direction.
# TYPE fwproxy_tcp_relayed_bytes_total counter
fwproxy_tcp_relayed_bytes_total{direction="client_to_target"} 10
fwproxy_tcp_relayed_bytes_total{direction="target_to_client"} 32
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(expected),
		"fwproxy_socks_sessions_active", "fwproxy_tcp_relayed_bytes_total"))
	body := gatherText(t, reg)
	assert.Contains(t, body, `fwproxy_socks_authentications_total{method="username_password",result="failure"} 1`+"\n")
	assert.Contains(t, body, `fwproxy_socks_requests_total{command="connect",reply="connection_refused"} 1`+"\n")
	assert.Equal(t, 1, testutil.CollectAndCount(reg, "fwproxy_socks_dial_duration_seconds"))
}

func TestHandlerRoutes(t *testing.T) {
	reg := NewRegistry("v1.2.3")
	extra := map[string]http.Handler{"/debug/x": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "x") })}
	srv := httptest.NewServer(Handler(reg, HandlerOptions{Log: slog.New(slog.DiscardHandler), Extra: extra}))
	t.Cleanup(srv.Close)

	tests := []struct {
		path, contains string
		status         int
	}{
		{"/metrics", `fwproxy_build_info{goversion="`, http.StatusOK},
		{"/metrics", `version="v1.2.3"`, http.StatusOK},
		{"/healthz", "ok", http.StatusOK},
		{"/readyz", "ready", http.StatusOK},
		{"/debug/x", "x", http.StatusOK},
		{"/nothing", "", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := srv.Client().Get(srv.URL + tt.path)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Equal(t, tt.status, resp.StatusCode)
			assert.Contains(t, string(body), tt.contains)
		})
	}
}

func TestLeasesSeries(t *testing.T) {
	reg := NewRegistry("test")
	m := NewLeases(reg, func() leases.Stats {
		return leases.Stats{Leases: 3, Active: 1, Lingering: 2, BufferedDatagrams: 5, BufferedBytes: 600}
	})
	m.LeaseEvent(leases.EventReclaim)
	m.Datagrams(leases.OutcomeBuffered, leases.ReasonNone, 5, 600)
	m.Datagrams(leases.OutcomeDropped, leases.ReasonNotPermitted, 1, 10)
	m.AcquireFailed(leases.FailPortTaken)

	expected := `
# HELP fwproxy_leases_current Leases in the table by state (active: held; lingering: released, buffering; closing).
# TYPE fwproxy_leases_current gauge
fwproxy_leases_current{state="active"} 1
fwproxy_leases_current{state="closing"} 0
fwproxy_leases_current{state="lingering"} 2
# HELP fwproxy_leases_buffered_datagrams Datagrams held in linger buffers.
# TYPE fwproxy_leases_buffered_datagrams gauge
fwproxy_leases_buffered_datagrams 5
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(expected),
		"fwproxy_leases_current", "fwproxy_leases_buffered_datagrams"))
	body := gatherText(t, reg)
	assert.Contains(t, body, `fwproxy_leases_events_total{event="reclaim"} 1`)
	assert.Contains(t, body, `fwproxy_leases_datagrams_total{outcome="buffered",reason="none"} 5`)
	assert.Contains(t, body, `fwproxy_leases_datagrams_total{outcome="dropped",reason="not_permitted"} 1`)
	assert.Contains(t, body, `fwproxy_leases_acquire_failures_total{reason="port_taken"} 1`)
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func gatherText(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	srv := httptest.NewServer(Handler(g, HandlerOptions{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func TestLeasesHandler(t *testing.T) {
	snapshot := func() []leases.LeaseInfo {
		return []leases.LeaseInfo{{
			Key:       leases.Key{Client: netip.MustParseAddr("10.0.0.5"), User: "alice", Port: 7000},
			LocalAddr: netip.MustParseAddrPort("192.0.2.1:7000"),
			State:     leases.StateLingering, Associations: 0, Announced: 1,
			BufferedDatagrams: 3, BufferedBytes: 300, Age: 2 * time.Second,
		}}
	}
	rec := httptest.NewRecorder()
	LeasesHandler(snapshot).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/leases", nil))
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var rows []map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &rows))
	require.Len(t, rows, 1)
	assert.Equal(t, "10.0.0.5", rows[0]["client"])
	assert.Equal(t, "alice", rows[0]["user"])
	assert.EqualValues(t, 7000, rows[0]["client_port"])
	assert.Equal(t, "192.0.2.1:7000", rows[0]["external"])
	assert.Equal(t, "lingering", rows[0]["state"])
	assert.EqualValues(t, 3, rows[0]["buffered_datagrams"])

	rec = httptest.NewRecorder()
	LeasesHandler(func() []leases.LeaseInfo { return nil }).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/leases", nil))
	assert.JSONEq(t, "[]", rec.Body.String(), "an empty table is an empty list, not null")
}
