package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
# HELP fwproxy_socks_authentications_total Authentications by method and result (success, failure).
# TYPE fwproxy_socks_authentications_total counter
fwproxy_socks_authentications_total{method="username_password",result="failure"} 1
# HELP fwproxy_socks_requests_total Answered SOCKS requests by command and reply code.
# TYPE fwproxy_socks_requests_total counter
fwproxy_socks_requests_total{command="connect",reply="connection_refused"} 1
# HELP fwproxy_tcp_relayed_bytes_total Bytes relayed on CONNECT sessions, by direction.
# TYPE fwproxy_tcp_relayed_bytes_total counter
fwproxy_tcp_relayed_bytes_total{direction="client_to_target"} 10
fwproxy_tcp_relayed_bytes_total{direction="target_to_client"} 32
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(expected),
		"fwproxy_socks_sessions_active", "fwproxy_socks_authentications_total",
		"fwproxy_socks_requests_total", "fwproxy_tcp_relayed_bytes_total"))
	assert.Equal(t, 1, testutil.CollectAndCount(reg, "fwproxy_socks_dial_duration_seconds"))
}

func TestHandlerRoutes(t *testing.T) {
	reg := NewRegistry("v1.2.3")
	extra := map[string]http.Handler{"/debug/x": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "x") })}
	srv := httptest.NewServer(Handler(reg, slog.New(slog.DiscardHandler), extra))
	t.Cleanup(srv.Close)

	tests := []struct {
		path, contains string
		status         int
	}{
		{"/metrics", `fwproxy_build_info{goversion="`, http.StatusOK},
		{"/metrics", `version="v1.2.3"`, http.StatusOK},
		{"/healthz", "ok", http.StatusOK},
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
