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
	reg := NewRegistry(BuildInfo{Version: "test"})
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
	reg := NewRegistry(BuildInfo{Version: "test"})
	s := NewSocks(reg)
	s.SessionsChanged(1)
	s.SessionsChanged(1)
	s.SessionsChanged(-1)
	s.Authenticated("username_password", false)
	s.LoginRateLimited()
	s.LoginRateLimited()
	s.Request("connect", "connection_refused", time.Millisecond, 2*time.Millisecond)
	s.Relayed("client_to_target", 10)
	s.Relayed("target_to_client", 32)

	expected := `
# HELP fwproxy_socks_sessions_active Client connections being served.
# TYPE fwproxy_socks_sessions_active gauge
fwproxy_socks_sessions_active 1
# HELP fwproxy_socks_authentications_total Authentications by method and result (success, failure, rate_limited: refused without a password check).
# TYPE fwproxy_socks_authentications_total counter
fwproxy_socks_authentications_total{method="username_password",result="failure"} 1
fwproxy_socks_authentications_total{method="username_password",result="rate_limited"} 2
fwproxy_socks_authentications_total{method="username_password",result="success"} 0
# HELP fwproxy_socks_requests_total Answered SOCKS requests by command and reply code.
# TYPE fwproxy_socks_requests_total counter
fwproxy_socks_requests_total{command="connect",reply="connection_refused"} 1
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

// TestLoginRefusalsExistAtZero: the series of refused logins are there
// before the first refusal, so that increase() sees it.
func TestLoginRefusalsExistAtZero(t *testing.T) {
	reg := NewRegistry(BuildInfo{Version: "test"})
	NewSocks(reg)
	body := gatherText(t, reg)
	for _, series := range []string{
		`fwproxy_socks_handshake_failures_total{reason="auth_busy"} 0`,
		`fwproxy_socks_authentications_total{method="username_password",result="failure"} 0`,
		`fwproxy_socks_authentications_total{method="username_password",result="rate_limited"} 0`,
	} {
		assert.Contains(t, body, series+"\n")
	}
}

func TestHandlerRoutes(t *testing.T) {
	reg := NewRegistry(BuildInfo{Version: "v1.2.3", Commit: "0123456789ab"})
	extra := map[string]http.Handler{"/debug/x": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "x") })}
	srv := httptest.NewServer(Handler(reg, HandlerOptions{Log: slog.New(slog.DiscardHandler), Extra: extra}))
	t.Cleanup(srv.Close)

	tests := []struct {
		path, contains string
		status         int
	}{
		{"/metrics", `fwproxy_build_info{commit="`, http.StatusOK},
		{"/metrics", `version="v1.2.3"`, http.StatusOK},
		{"/metrics", `commit="0123456789ab"`, http.StatusOK},
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
	reg := NewRegistry(BuildInfo{Version: "test"})
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

// TestSocksRefusalSeriesStartAtZero: every refusal reason and rejection
// reason is a series from the start, so a first refusal is a change an
// alert can see.
func TestSocksRefusalSeriesStartAtZero(t *testing.T) {
	reg := NewRegistry(BuildInfo{Version: "test"})
	s := NewSocks(reg)
	s.DestinationRefused("own_socket")
	s.ConnectionRejected("client_session_limit")
	expected := `
# HELP fwproxy_socks_connections_rejected_total Client connections closed before the handshake, by reason (client_not_allowed, session_limit, client_session_limit, proxy_header_missing, proxy_header_invalid, proxy_header_untrusted).
# TYPE fwproxy_socks_connections_rejected_total counter
fwproxy_socks_connections_rejected_total{reason="client_not_allowed"} 0
fwproxy_socks_connections_rejected_total{reason="client_session_limit"} 1
fwproxy_socks_connections_rejected_total{reason="proxy_header_invalid"} 0
fwproxy_socks_connections_rejected_total{reason="proxy_header_missing"} 0
fwproxy_socks_connections_rejected_total{reason="proxy_header_untrusted"} 0
fwproxy_socks_connections_rejected_total{reason="session_limit"} 0
# HELP fwproxy_socks_destinations_refused_total CONNECT and BIND destinations, addresses of requested names and BIND peers refused, by reason.
# TYPE fwproxy_socks_destinations_refused_total counter
fwproxy_socks_destinations_refused_total{reason="broadcast"} 0
fwproxy_socks_destinations_refused_total{reason="client_network"} 0
fwproxy_socks_destinations_refused_total{reason="multicast"} 0
fwproxy_socks_destinations_refused_total{reason="own_socket"} 1
fwproxy_socks_destinations_refused_total{reason="proxy_host"} 0
fwproxy_socks_destinations_refused_total{reason="rules"} 0
fwproxy_socks_destinations_refused_total{reason="unspecified"} 0
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(expected),
		"fwproxy_socks_connections_rejected_total", "fwproxy_socks_destinations_refused_total"))
}

func TestConfigReloads(t *testing.T) {
	reg := NewRegistry(BuildInfo{Version: "test"})
	c := NewConfigReloads(reg, time.Unix(100, 0))
	series := []string{"fwproxy_config_reloads_total", "fwproxy_config_last_reload_success_timestamp_seconds"}
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`# HELP fwproxy_config_last_reload_success_timestamp_seconds Unix time of the last configuration load that took effect (start-up or SIGHUP).
# TYPE fwproxy_config_last_reload_success_timestamp_seconds gauge
fwproxy_config_last_reload_success_timestamp_seconds 100
# HELP fwproxy_config_reloads_total Configuration reloads (SIGHUP) by result; a failed reload keeps the running configuration.
# TYPE fwproxy_config_reloads_total counter
fwproxy_config_reloads_total{result="failure"} 0
fwproxy_config_reloads_total{result="success"} 0
`), series...), "both results exist at 0 from the start")

	c.Reloaded(false, time.Unix(200, 0))
	c.Reloaded(true, time.Unix(300, 0))
	c.Reloaded(false, time.Unix(400, 0))
	assert.Equal(t, 2.0, testutil.ToFloat64(c.failure))
	assert.Equal(t, 1.0, testutil.ToFloat64(c.success))
	assert.Equal(t, 300.0, testutil.ToFloat64(c.lastSuccess), "a failure leaves the last success time")
}
