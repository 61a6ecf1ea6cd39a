package metrics

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/leases"
	"fwproxy/proxy"
)

const (
	rulesFile     = "rules/fwproxy.yaml"
	rulesTestFile = "rules/fwproxy_test.yaml"
	dashboardFile = "dashboard.json"
)

// wiredRegistry is a registry with every fwproxy series, wired as
// cmd/fwproxy wires them, with real components behind the collectors.
func wiredRegistry(t *testing.T) scrape {
	t.Helper()
	reg := NewRegistry(BuildInfo{Version: "test"})
	socks := NewSocks(reg)
	// The server asks for its datagram series when it is built.
	srv, err := proxy.New(proxy.DefaultConfig(), proxy.Deps{Observer: socks})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	lcfg := leases.DefaultConfig()
	lm, err := leases.New(lcfg, leases.Deps{Observer: NewLeases(reg, nil)})
	require.NoError(t, err)
	t.Cleanup(func() { lm.Close() })
	reg.MustRegister(LeaseTable(lm.Stats))
	NewMMS(reg)
	NewRTSP(reg)
	NewConfigReloads(reg, time.Unix(0, 0))
	NewLimits(reg, Limits{MaxSessions: 1024, MaxLeases: lcfg.MaxLeases, MaxLeasesPerClient: lcfg.MaxLeasesPerClient,
		MaxBufferedDatagrams: lcfg.MaxBufferedDatagrams, MaxBufferedBytes: lcfg.MaxBufferedBytes,
		MaxBufferedBytesTotal: lcfg.MaxBufferedBytesTotal, PortRangeSize: int(lcfg.PortMax-lcfg.PortMin) + 1})
	return scrape{Text: gatherText(t, reg)}
}

// scrape is one scrape's text and its samples by name.
type scrape struct {
	Text string
}

// sampleLine is one sample of the text exposition: name, labels, value.
var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)

// labelPair is one label="value" of a sample or one matcher of a selector.
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)

// samples returns, per series name, the label sets of its samples.
func (g scrape) samples() map[string][]map[string]string {
	out := map[string][]map[string]string{}
	add := func(line string) {
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			return
		}
		labels := map[string]string{}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			labels[p[1]] = p[3]
		}
		out[m[1]] = append(out[m[1]], labels)
	}
	for _, line := range strings.Split(g.Text, "\n") {
		if !strings.HasPrefix(line, "#") {
			add(line)
		}
	}
	return out
}

func TestScrapePassesPromtool(t *testing.T) {
	g := wiredRegistry(t)
	cmd := exec.Command(promtool(t), "check", "metrics")
	cmd.Stdin = strings.NewReader(g.Text)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "promtool check metrics:\n%s", out)

	// The failure series exist from the start, at 0, so that increase()
	// and the alerts see their first event.
	for _, line := range []string{
		`fwproxy_socks_connections_rejected_total{reason="client_not_allowed"} 0`,
		`fwproxy_socks_connections_rejected_total{reason="session_limit"} 0`,
		`fwproxy_socks_handshake_failures_total{reason="auth_failed"} 0`,
		`fwproxy_socks_handshake_failures_total{reason="timeout"} 0`,
		`fwproxy_socks_handshake_failures_total{reason="bad_version"} 0`,
		`fwproxy_socks_authentications_total{method="username_password",result="failure"} 0`,
		`fwproxy_socks_authentications_total{method="no_auth",result="success"} 0`,
		`fwproxy_socks_requests_total{command="connect",reply="host_unreachable"} 0`,
		`fwproxy_socks_requests_total{command="unknown",reply="command_not_supported"} 0`,
		`fwproxy_udp_datagrams_total{direction="client_to_remote",outcome="not_allowed"} 0`,
		`fwproxy_udp_datagrams_total{direction="client_to_remote",outcome="client_network"} 0`,
		`fwproxy_socks_destinations_refused_total{reason="client_network"} 0`,
		`fwproxy_udp_datagrams_total{direction="remote_to_client",outcome="send_failed"} 0`,
		`fwproxy_leases_datagrams_total{outcome="dropped",reason="expired_unflushed"} 0`,
		`fwproxy_leases_acquire_failures_total{reason="table_full"} 0`,
		`fwproxy_mms_funnel_rewrites_total{mode="failed"} 0`,
		`fwproxy_mms_problems_total{direction="client_to_server",problem="funnel_rewrite_failed"} 0`,
		`fwproxy_mms_problems_total{direction="client_to_server",problem="logging_malformed"} 0`,
		`fwproxy_mms_logging_rewrites_total{field="address"} 0`,
		`fwproxy_mms_logging_rewrites_total{field="computer_name"} 0`,
		`fwproxy_rtsp_setups_total{mode="none",outcome="proxy_refused"} 0`,
		`fwproxy_rtsp_problems_total{direction="client_to_server",problem="lease_failed"} 0`,
		`fwproxy_rtsp_problems_total{direction="server_to_client",problem="not_rtsp"} 0`,
		`fwproxy_rtsp_transports_total{action="dropped"} 0`,
		`fwproxy_rtsp_destination_rewrites_total 0`,
		`fwproxy_rtsp_requests_total{direction="client_to_server",method="SETUP"} 0`,
		`fwproxy_rtsp_responses_total{class="4xx",direction="server_to_client"} 0`,
		`fwproxy_rtsp_connections_active 0`,
		`fwproxy_limit_sessions 1024`,
		`fwproxy_limit_udp_ports 64512`,
	} {
		assert.Contains(t, g.Text, "\n"+line+"\n")
	}
}

func TestRulesPromtool(t *testing.T) {
	tool := promtool(t)
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		out, err := exec.Command(tool, args...).CombinedOutput()
		assert.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
	}
}

// TestDashboardQueriesParse runs every dashboard query through promtool as
// a recording rule, with Grafana's variables given typical values.
func TestDashboardQueriesParse(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range dashboardQueries(t) {
		fmt.Fprintf(&b, "      - record: dashboard:query_%d\n        expr: %q\n", i, grafanaToPromQL(q))
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	require.NoError(t, os.WriteFile(path, b.Bytes(), 0o600))
	out, err := exec.Command(promtool(t), "check", "rules", path).CombinedOutput()
	assert.NoError(t, err, "promtool check rules (dashboard queries):\n%s", out)
}

// TestRulesAndDashboardNameRealSeries: every series name the rules and the
// dashboard use exists in a scrape of the wired registry (or is a recording
// rule of the rules file), and so does every label value they match on, so
// a renamed metric or a misspelt reason cannot leave an alert that never
// fires.
func TestRulesAndDashboardNameRealSeries(t *testing.T) {
	samples := wiredRegistry(t).samples()
	exprs, records := ruleExprs(t)
	require.NotEmpty(t, exprs)
	recorded := map[string]bool{}
	for _, r := range records {
		recorded[r] = true
	}
	all := append(exprs, dashboardQueries(t)...)
	for _, q := range all {
		for _, sel := range selectors(q) {
			if recorded[sel.name] {
				continue
			}
			got, ok := samples[sel.name]
			if !assert.True(t, ok, "%q uses %s, which no fwproxy scrape has", q, sel.name) {
				continue
			}
			for _, m := range sel.matchers {
				if m.label == "instance" || m.label == "job" {
					continue
				}
				for _, v := range m.values() {
					assert.True(t, hasLabelValue(got, m.label, v), "%q matches %s{%s=%q}, which no fwproxy scrape has", q, sel.name, m.label, v)
				}
			}
		}
	}
}

func hasLabelValue(series []map[string]string, label, value string) bool {
	for _, s := range series {
		if s[label] == value {
			return true
		}
	}
	return false
}

// promtool returns promtool's path; `make test` installs it (Debian's
// prometheus package, e2e/install-deps.sh).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool is needed (make test installs Debian's prometheus package)")
	return p
}

// ruleExprs returns the expressions and the recording-rule names of the
// rules file. Every expr is one line (the file's convention, which this
// checks against promtool's count of rules).
func ruleExprs(t *testing.T) (exprs, records []string) {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	require.NoError(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if e, ok := strings.CutPrefix(line, "expr: "); ok {
			exprs = append(exprs, e)
		}
		if r, ok := strings.CutPrefix(line, "- record: "); ok {
			records = append(records, r)
		}
	}
	out, err := exec.Command(promtool(t), "check", "rules", rulesFile).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), fmt.Sprintf("SUCCESS: %d rules found", len(exprs)), "every rule's expr is on one line")
	return exprs, records
}

// dashboardQueries returns every panel target's expr of the dashboard.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var d struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(data, &d))
	var out []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	require.NotEmpty(t, out)
	return out
}

// grafanaToPromQL substitutes Grafana's variables.
func grafanaToPromQL(q string) string {
	return strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$instance", ".*").Replace(q)
}

// selector is one series selector of an expression.
type selector struct {
	name     string
	matchers []matcher
}

type matcher struct{ label, op, value string }

// values returns the label values a matcher names: the value, or each
// alternative of a regular expression made of plain alternatives.
func (m matcher) values() []string {
	if m.op == "=" || m.op == "!=" {
		return []string{m.value}
	}
	if regexp.MustCompile(`^[a-z0-9_]+(\|[a-z0-9_]+)*$`).MatchString(m.value) {
		return strings.Split(m.value, "|")
	}
	return nil
}

// seriesName is an fwproxy series, a process series, or a recording rule,
// optionally followed by its label matchers.
var seriesName = regexp.MustCompile(`\b((?:fwproxy[_:]|process_)[a-zA-Z0-9_:]*)(\{[^}]*\})?`)

func selectors(q string) []selector {
	var out []selector
	for _, m := range seriesName.FindAllStringSubmatch(q, -1) {
		s := selector{name: m[1]}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			s.matchers = append(s.matchers, matcher{label: p[1], op: p[2], value: p[3]})
		}
		out = append(out, s)
	}
	return out
}

func TestSelectors(t *testing.T) {
	got := selectors(`sum by (reason) (rate(fwproxy_leases_datagrams_total{outcome="dropped", reason=~"a|b"}[5m])) / fwproxy:x:ratio and process_max_fds`)
	require.Len(t, got, 3)
	assert.Equal(t, "fwproxy_leases_datagrams_total", got[0].name)
	assert.Equal(t, []matcher{{"outcome", "=", "dropped"}, {"reason", "=~", "a|b"}}, got[0].matchers)
	assert.Equal(t, []string{"a", "b"}, got[0].matchers[1].values())
	assert.Equal(t, "fwproxy:x:ratio", got[1].name)
	assert.Equal(t, "process_max_fds", got[2].name)
}
