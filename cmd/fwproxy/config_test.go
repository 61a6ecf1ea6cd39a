package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"fwproxy/proxy"
)

// writeFile writes body to a file named config.yaml in a fresh directory.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

// usersFile writes a users file with alice (password "secret").
func usersFile(t *testing.T) string {
	t.Helper()
	line, err := proxy.HashPassword("alice", []byte("secret"))
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(p, []byte(line+"\n"), 0o600))
	return p
}

// loadArgs is what a start builds from args: the checked settings.
func loadArgs(t *testing.T, args ...string) (settings, configErrors, configErrors) {
	t.Helper()
	inv, err := parseArgs(args, io.Discard)
	require.NoError(t, err)
	return inv.settings()
}

func TestEffectiveConfig(t *testing.T) {
	file := writeFile(t, `
listen: 127.0.0.1:2080
idle_timeout: 1m
rules:
  clients: [10.0.0.0/8, 127.0.0.1]
  commands: [connect]
  deny: [{network: 10.0.0.0/8}]
  allow: [{network: 0.0.0.0/0, ports: "1755"}, {network: "::/0", ports: 1024-2048}]
`)
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, s settings)
	}{
		{"defaults", nil, func(t *testing.T, s settings) {
			assert.Equal(t, DefaultConfig(), s.cfg)
			assert.Nil(t, s.users)
		}},
		{"file overrides defaults", []string{"-config", file}, func(t *testing.T, s settings) {
			assert.Equal(t, "127.0.0.1:2080", s.cfg.Listen)
			assert.Equal(t, time.Minute, s.proxy.IdleTimeout)
			assert.Equal(t, "127.0.0.1:9480", s.cfg.MetricsListen, "keys not in the file keep their defaults")
			assert.True(t, s.proxy.Rules.Connect)
			assert.False(t, s.proxy.Rules.Associate)
			require.Len(t, s.proxy.Rules.AllowDestinations, 2)
			assert.Equal(t, uint16(1755), s.proxy.Rules.AllowDestinations[0].FirstPort)
			assert.Equal(t, uint16(2048), s.proxy.Rules.AllowDestinations[1].LastPort)
		}},
		{"flags override the file, wherever they stand", []string{"-listen", "127.0.0.1:3080", "-config", file, "-idle-timeout", "0s"}, func(t *testing.T, s settings) {
			assert.Equal(t, "127.0.0.1:3080", s.cfg.Listen)
			assert.Equal(t, time.Duration(0), s.proxy.IdleTimeout)
		}},
		{"udp and mms flags", []string{"-external-ip", "127.0.0.2", "-advertise-ip", "127.0.0.9", "-udp-ports", "40000-40999",
			"-lease-linger", "0", "-udp-idle-timeout", "1m", "-bind-timeout", "5s", "-mms-ports", "1755, 8755"}, func(t *testing.T, s settings) {
			assert.Equal(t, []uint16{1755, 8755}, s.cfg.MMSPorts)
			assert.Equal(t, "127.0.0.2", s.mms.ExternalIP.String(), "funnels and Logging name external_ip")
			assert.True(t, s.mms.ScrubComputerName, "scrubbing is the default")
			assert.Equal(t, "127.0.0.2", s.leases.ListenIP.String())
			assert.Equal(t, uint16(40000), s.leases.PortMin)
			assert.Equal(t, uint16(40999), s.leases.PortMax)
			assert.Equal(t, time.Duration(0), s.leases.Linger)
			assert.Equal(t, "127.0.0.9", s.proxy.AdvertiseIP.String())
			assert.Equal(t, "127.0.0.2", s.proxy.ExternalIP.String())
			assert.Equal(t, time.Minute, s.proxy.UDPIdleTimeout)
			assert.Equal(t, 5*time.Second, s.proxy.BindTimeout)
		}},
		{"hardening flags", []string{"-max-sessions-per-client", "3", "-bind-ports", "2000-2999",
			"-allow", "127.0.0.0/8", "-allow", "127.0.0.1,1080", "-allow", "::1/128,1024-65535"}, func(t *testing.T, s settings) {
			p := s.proxy
			assert.Equal(t, 3, p.MaxSessionsPerClient)
			assert.Equal(t, uint16(2000), p.BindPortMin)
			assert.Equal(t, uint16(2999), p.BindPortMax)
			require.Len(t, p.Rules.AllowDestinations, 3)
			assert.Equal(t, "127.0.0.0/8", p.Rules.AllowDestinations[0].Network.String())
			assert.Equal(t, uint16(0), p.Rules.AllowDestinations[0].FirstPort)
			assert.Equal(t, "127.0.0.1/32", p.Rules.AllowDestinations[1].Network.String())
			assert.Equal(t, uint16(1080), p.Rules.AllowDestinations[1].LastPort)
			assert.Equal(t, uint16(1024), p.Rules.AllowDestinations[2].FirstPort)
		}},
		{"tcp keep-alive is off unless asked for", nil, func(t *testing.T, s settings) {
			assert.Zero(t, s.proxy.TCPKeepAlive)
		}},
		{"tcp keep-alive", []string{"-tcp-keepalive", "30s"}, func(t *testing.T, s settings) {
			assert.Equal(t, 30*time.Second, s.proxy.TCPKeepAlive)
		}},
		{"proxy protocol networks", []string{"-proxy-protocol-from", "198.51.100.50, 2001:db8:1::/64"}, func(t *testing.T, s settings) {
			assert.Equal(t, "[198.51.100.50/32 2001:db8:1::/64]", fmt.Sprint(s.proxyProto.From))
		}},
		{"relay ports", []string{"-relay-ports", "41000-41999"}, func(t *testing.T, s settings) {
			assert.Equal(t, proxy.PortRange{Min: 41000, Max: 41999}, s.proxy.RelayPorts)
		}},
		{"hardening defaults", nil, func(t *testing.T, s settings) {
			p := s.proxy
			assert.Equal(t, 64, p.MaxSessionsPerClient)
			assert.Equal(t, uint16(1024), p.BindPortMin)
			assert.Equal(t, uint16(65535), p.BindPortMax)
		}},
		{"hardening keys in the file", []string{"-config", writeFile(t, "max_sessions_per_client: 0\nbind_ports: 1-65535\n")}, func(t *testing.T, s settings) {
			p := s.proxy
			assert.Zero(t, p.MaxSessionsPerClient)
			assert.Equal(t, uint16(1), p.BindPortMin)
		}},
		{"login limits from the file", []string{"-config", writeFile(t, "auth_failures_per_minute: 3\nauth_failure_burst: 2\nauth_concurrency: 4\n")}, func(t *testing.T, s settings) {
			assert.Equal(t, 3, s.proxy.AuthFailuresPerMinute)
			assert.Equal(t, 2, s.proxy.AuthFailureBurst)
			assert.Equal(t, 4, s.proxy.AuthConcurrency)
		}},
		{"login limits from flags", []string{"-auth-failures-per-minute", "0", "-auth-failure-burst", "9", "-auth-concurrency", "1"}, func(t *testing.T, s settings) {
			assert.Equal(t, 0, s.proxy.AuthFailuresPerMinute, "0 turns the limit off")
			assert.Equal(t, 9, s.proxy.AuthFailureBurst)
			assert.Equal(t, 1, s.proxy.AuthConcurrency)
		}},
		{"mms disabled", []string{"-mms-ports", ""}, func(t *testing.T, s settings) {
			assert.Empty(t, s.cfg.MMSPorts)
		}},
		{"rtsp default", nil, func(t *testing.T, s settings) {
			assert.Equal(t, []uint16{554, 8554}, s.cfg.RTSPPorts)
			assert.Equal(t, s.leases.ListenIP, s.rtsp.ExternalIP, "destination parameters name external_ip")
		}},
		{"rtsp ports flag", []string{"-rtsp-ports", "8554,9554"}, func(t *testing.T, s settings) {
			assert.Equal(t, []uint16{8554, 9554}, s.cfg.RTSPPorts)
		}},
		{"rtsp disabled", []string{"-rtsp-ports", ""}, func(t *testing.T, s settings) {
			assert.Empty(t, s.cfg.RTSPPorts)
		}},
		{"metrics users", []string{"-metrics-users", usersFile(t)}, func(t *testing.T, s settings) {
			assert.NotEmpty(t, s.cfg.MetricsUsers)
		}},
		{"every other flag", []string{"-metrics-listen", "", "-users", usersFile(t), "-log-format", "json", "-log-level", "debug",
			"-handshake-timeout", "1s", "-dial-timeout", "2s", "-drain-timeout", "3s", "-max-sessions", "7"}, func(t *testing.T, s settings) {
			assert.Equal(t, "", s.cfg.MetricsListen)
			require.NotNil(t, s.users)
			assert.True(t, s.users.Valid("alice", "secret"))
			assert.Equal(t, "json", s.cfg.LogFormat)
			assert.Equal(t, "DEBUG", s.level.String())
			assert.Equal(t, time.Second, s.proxy.HandshakeTimeout)
			assert.Equal(t, 2*time.Second, s.proxy.DialTimeout)
			assert.Equal(t, 3*time.Second, s.cfg.DrainTimeout)
			assert.Equal(t, 7, s.proxy.MaxSessions)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, errs := loadArgs(t, tt.args...)
			require.Empty(t, errs)
			tt.check(t, s)
		})
	}
}

// TestConfigFileForms: what the file may write besides the plain form.
func TestConfigFileForms(t *testing.T) {
	tests := []struct {
		name, file string
		check      func(t *testing.T, c Config)
	}{
		{"bare 0 for a duration", "lease_linger: 0\nidle_timeout: 0\nudp_idle_timeout: 0\n", func(t *testing.T, c Config) {
			assert.Zero(t, c.LeaseLinger)
			assert.Zero(t, c.IdleTimeout)
			assert.Zero(t, c.UDPIdleTimeout)
		}},
		{"durations with units", "dial_timeout: 1500ms\nbind_timeout: 1h30m\n", func(t *testing.T, c Config) {
			assert.Equal(t, 1500*time.Millisecond, c.DialTimeout)
			assert.Equal(t, 90*time.Minute, c.BindTimeout)
		}},
		{"mms_ports as a scalar", "mms_ports: 1755\n", func(t *testing.T, c Config) {
			assert.Equal(t, []uint16{1755}, c.MMSPorts)
		}},
		{"mms_ports as the flag writes it", `mms_ports: "1755, 8755"` + "\n", func(t *testing.T, c Config) {
			assert.Equal(t, []uint16{1755, 8755}, c.MMSPorts)
		}},
		{"mms_scrub_computer_name off", "mms_scrub_computer_name: false\n", func(t *testing.T, c Config) {
			assert.False(t, c.MMSScrubComputerName)
		}},
		{"rtsp_ports as a list", "rtsp_ports: [554, 8554, 10554]\n", func(t *testing.T, c Config) {
			assert.Equal(t, []uint16{554, 8554, 10554}, c.RTSPPorts)
		}},
		{"rtsp_ports empty list", "rtsp_ports: []\n", func(t *testing.T, c Config) {
			assert.Empty(t, c.RTSPPorts)
		}},
		{"mms_ports empty list", "mms_ports: []\n", func(t *testing.T, c Config) {
			assert.Empty(t, c.MMSPorts)
		}},
		{"a list of one as a scalar", "rules:\n  clients: 192.0.2.0/24\n", func(t *testing.T, c Config) {
			assert.Equal(t, []string{"192.0.2.0/24"}, c.Rules.Clients)
		}},
		{"ports as a number", "rules: {allow: [{network: 192.0.2.0/24, ports: 1755}]}\n", func(t *testing.T, c Config) {
			assert.Equal(t, "1755", c.Rules.Allow[0].Ports)
		}},
		{"anchors", "listen: &a 127.0.0.1:1090\nmetrics_listen: 127.0.0.1:9490\nadvertise_ip: 127.0.0.3\n", func(t *testing.T, c Config) {
			assert.Equal(t, "127.0.0.1:1090", c.Listen)
		}},
		{"empty file", "", func(t *testing.T, c Config) { assert.Equal(t, DefaultConfig(), c) }},
		{"comments only", "# nothing yet\n", func(t *testing.T, c Config) { assert.Equal(t, DefaultConfig(), c) }},
		{"empty section", "rules:\nleases:\n", func(t *testing.T, c Config) { assert.Equal(t, DefaultConfig(), c) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, errs := loadArgs(t, "-config", writeFile(t, tt.file))
			require.Empty(t, errs)
			tt.check(t, s.cfg)
		})
	}
}

// TestConfigErrors runs -check-config over real files and flags and
// compares everything it says, line by line: each problem names where it
// is, the key, the value and what is allowed, and all are reported.
func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		file string // written to config.yaml; "" for none
		args []string
		want []string // stderr lines before the summary
	}{
		{"misspelt key", "lease_liner: 5s\n", nil,
			[]string{`config.yaml:1: unknown key "lease_liner" (did you mean "lease_linger"?)`}},
		{"misspelt nested key", "rules:\n  clinets: [127.0.0.1]\n", nil,
			[]string{`config.yaml:2: unknown key "rules.clinets" (did you mean "rules.clients"?)`}},
		{"unknown key", "colour: blue\n", nil, []string{`config.yaml:1: unknown key "colour"`}},
		{"key twice", "listen: 127.0.0.1:1\n\nlisten: 127.0.0.1:2\n", nil,
			[]string{`config.yaml:3: key "listen" given twice (first on line 1)`}},
		{"network", "rules:\n  deny:\n    - network: 10.0.0.0/33\n", nil,
			[]string{`config.yaml:3: rules.deny[0].network: "10.0.0.0/33" is not a CIDR network`}},
		{"network missing", "rules:\n  allow:\n    - ports: 1755\n", nil,
			[]string{`config.yaml:3: rules.allow[0].network: is missing; want a CIDR network such as 10.0.0.0/8`}},
		{"client network", "rules: {clients: [127.0.0.1, 10.0.0.0/33]}\n", nil,
			[]string{`config.yaml:1: rules.clients[1]: "10.0.0.0/33" is not a CIDR network or an IP address`}},
		{"command", "rules:\n  commands: [connect, telnet]\n", nil,
			[]string{`config.yaml:2: rules.commands[1]: "telnet" is not a command (connect, bind, udp_associate)`}},
		{"reversed ports", "rules: {allow: [{network: 0.0.0.0/0, ports: 9-1}]}\n", nil,
			[]string{`config.yaml:1: rules.allow[0].ports: "9-1": the first port must not be above the last`}},
		{"port zero", "rules: {deny: [{network: 0.0.0.0/0, ports: \"0\"}]}\n", nil,
			[]string{`config.yaml:1: rules.deny[0].ports: 0 is not a port (1-65535)`}},
		{"ports not a number", "rules: {deny: [{network: 0.0.0.0/0, ports: rtsp}]}\n", nil,
			[]string{`config.yaml:1: rules.deny[0].ports: "rtsp" is not a port or a range LO-HI (such as 1755 or 40000-40999)`}},
		{"negative sessions per client", "max_sessions_per_client: -1\n", nil,
			[]string{`config.yaml:1: max_sessions_per_client: -1 must not be negative (0 means no cap)`}},
		{"bind ports from 0", "", []string{"-bind-ports", "0-80"},
			[]string{`-bind-ports: 0 is not a port (1-65535)`}},
		{"negative login limit", "auth_failures_per_minute: -1\n", nil,
			[]string{`config.yaml:1: auth_failures_per_minute: -1 must not be negative (0 means no limit)`}},
		{"login limit without a burst", "auth_failure_burst: 0\n", nil,
			[]string{`config.yaml:1: auth_failure_burst: 0 must be more than 0 while auth_failures_per_minute is on`}},
		{"negative auth concurrency", "", []string{"-auth-concurrency", "-2"},
			[]string{`-auth-concurrency: -2 must not be negative (0 means one per CPU)`}},
		{"udp port out of range", "udp_ports: 70000\n", nil,
			[]string{`config.yaml:1: udp_ports: 70000 is not a port (1-65535)`}},
		{"wildcard external ip", "external_ip: 0.0.0.0\n", nil,
			[]string{`config.yaml:1: external_ip: 0.0.0.0 must be a specific address (the proxy's address towards media servers, not a wildcard)`}},
		{"external ip not an address", "", []string{"-external-ip", "outside"},
			[]string{`-external-ip: "outside" is not an IP address`}},
		{"syntax error on the first line", "a: b: c\n", nil,
			[]string{`config.yaml:1: YAML syntax error: mapping values are not allowed in this context`}},
		{"syntax error further down", "listen: 127.0.0.1:1080\nmms_ports: [1755\nlog_level: info\n", nil,
			[]string{`config.yaml:2: YAML syntax error: did not find expected ',' or ']'`}},
		{"syntax error at the end", "rules: {\n", nil,
			[]string{`config.yaml:2: YAML syntax error: did not find expected node content`}},
		{"bad indentation", "rules:\n  clients: [127.0.0.1]\n commands: [connect]\n", nil,
			[]string{`config.yaml:3: YAML syntax error: did not find expected key`}},
		{"tab indentation", "rules:\n\tclients: []\n", nil,
			[]string{`config.yaml:2: YAML syntax error: found character that cannot start any token`}},
		{"bare number duration", "idle_timeout: 30\n", nil,
			[]string{`config.yaml:1: idle_timeout: 30 has no unit: write 30s (or ms, m, h)`}},
		{"bare number duration flag", "", []string{"-lease-linger", "10"},
			[]string{`-lease-linger: 10 has no unit: write 10s (or ms, m, h)`}},
		{"not a duration", "dial_timeout: soon\n", nil,
			[]string{`config.yaml:1: dial_timeout: "soon" is not a duration (write e.g. 30s, 5m or 1h30m)`}},
		{"zero handshake timeout", "handshake_timeout: 0\n", nil,
			[]string{`config.yaml:1: handshake_timeout: 0s must be more than 0`}},
		{"negative linger", "lease_linger: -1s\n", nil,
			[]string{`config.yaml:1: lease_linger: -1s must not be negative (0 closes a released lease at once)`}},
		{"linger without a buffer cap", "leases: {max_buffered_datagrams: 0, max_buffered_bytes: 0, max_buffered_bytes_total: 0}\n", nil,
			[]string{`lease_linger: 10s needs a buffer cap: set leases.max_buffered_datagrams, max_buffered_bytes or max_buffered_bytes_total above 0`}},
		{"mms port", "mms_ports: [1755, 0]\n", nil, []string{`config.yaml:1: mms_ports[1]: 0 is not a port (1-65535)`}},
		{"mms port flag", "", []string{"-mms-ports", "1755,x"}, []string{`-mms-ports: "x" is not a port (1-65535)`}},
		{"rtsp port", "rtsp_ports: [554, 70000]\n", nil, []string{`config.yaml:1: rtsp_ports[1]: 70000 is not a port (1-65535)`}},
		{"rtsp port in mms_ports", "mms_ports: [1755, 554]\n", nil, []string{`rtsp_ports: port 554 is also in mms_ports; a port has at most one filter`}},
		{"rtsp port flag in mms_ports", "", []string{"-rtsp-ports", "8554,1755"}, []string{`-rtsp-ports: port 1755 is also in mms_ports; a port has at most one filter`}},
		{"rtsp port listed twice", "rtsp_ports: [554, 554]\n", nil, []string{`config.yaml:1: rtsp_ports: port 554 is listed twice`}},
		{"number", "max_sessions: many\n", nil, []string{`config.yaml:1: max_sessions: "many" is not a whole number`}},
		{"negative max sessions", "", []string{"-max-sessions", "-1"}, []string{`-max-sessions: -1 must be more than 0`}},
		{"log format", "log_format: jsn\n", nil, []string{`config.yaml:1: log_format: "jsn" is not a log format (text, json)`}},
		{"log level", "log_level: loud\n", nil, []string{`config.yaml:1: log_level: "loud" is not a log level (debug, info, warn, error)`}},
		{"listen without a port", "", []string{"-listen", "1083"},
			[]string{`-listen: "1083" is not HOST:PORT (such as 127.0.0.1:1080 or [::1]:1080)`}},
		{"listen port", "listen: 127.0.0.1:http\n", nil,
			[]string{`config.yaml:1: listen: "127.0.0.1:http": "http" is not a port (0-65535)`}},
		{"metrics on the SOCKS address", "listen: 127.0.0.1:1080\nmetrics_listen: 127.0.0.1:1080\n", nil,
			[]string{`config.yaml:2: metrics_listen: "127.0.0.1:1080" is also the SOCKS listen address`}},
		{"missing users file", "users: /nonexistent/users\n", nil,
			[]string{`config.yaml:1: users: load users: open /nonexistent/users: no such file or directory`}},
		{"a mapping where a value goes", "listen: {host: x}\n", nil,
			[]string{`config.yaml:1: listen: want a single value, not a mapping`}},
		{"a list where a mapping goes", "rules: [a]\n", nil,
			[]string{`config.yaml:1: rules: want a mapping of keys, not a list`}},
		{"every error at once, in line order", "udp_ports: 0-10\nlease_liner: 1s\nidle_timeout: 5\nrules:\n  deny: [{network: x}]\n", []string{"-log-level", "x"},
			[]string{
				`config.yaml:1: udp_ports: 0 is not a port (1-65535)`,
				`config.yaml:2: unknown key "lease_liner" (did you mean "lease_linger"?)`,
				`config.yaml:3: idle_timeout: 5 has no unit: write 5s (or ms, m, h)`,
				`config.yaml:5: rules.deny[0].network: "x" is not a CIDR network`,
				`-log-level: "x" is not a log level (debug, info, warn, error)`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-check-config"}, tt.args...)
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
				args = append(args, "-config", path)
			}
			for _, mode := range []string{"-check-config", "-print-config"} {
				args[0] = mode
				var out, errOut bytes.Buffer
				code := run(context.Background(), args, nil, nil, &out, &errOut)
				assert.Equal(t, 1, code, "%s exits non-zero", mode)
				assert.Empty(t, out.String(), "%s prints no configuration", mode)
				got := errOut.String()
				if path != "" {
					got = strings.ReplaceAll(got, path, "config.yaml")
				}
				lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
				require.NotEmpty(t, lines)
				assert.Equal(t, tt.want, lines[:len(lines)-1], mode)
				assert.Contains(t, lines[len(lines)-1], "the configuration has")
			}
		})
	}
}

// TestWholeFamilyClientNetworkWarns: a client network of a whole family
// makes no destination an inside one, which an operator should be told.
func TestWholeFamilyClientNetworkWarns(t *testing.T) {
	_, warns, errs := loadArgs(t, "-config", writeFile(t, "rules:\n  clients: [192.0.2.0/24, \"::/0\"]\n"))
	require.Empty(t, errs)
	require.Len(t, warns, 1)
	assert.Contains(t, warns[0].Error(), `rules.clients[1]: ::/0 admits every source; it is not taken as an inside network`)
}

func TestCheckConfigPrintsTheEffectiveConfig(t *testing.T) {
	file := writeFile(t, "lease_linger: 0\nusers: "+usersFile(t)+"\nrules:\n  clients: []\n")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-check-config", "-config", file, "-idle-timeout", "1m"}, nil, nil, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Contains(t, out.String(), "idle_timeout: 1m0s\n")
	assert.Contains(t, out.String(), "lease_linger: 0s\n")
	assert.Contains(t, errOut.String(), "warning: config.yaml:4: rules.clients: is empty: every client is refused"[len("warning: "):])
	assert.Contains(t, errOut.String(), "the configuration is valid")
}

func TestPrintConfigRoundTrips(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-print-config", "-listen", "127.0.0.1:4080"}, nil, nil, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	var back Config
	require.NoError(t, yaml.Unmarshal(out.Bytes(), &back))
	want := DefaultConfig()
	want.Listen = "127.0.0.1:4080"
	want.Rules.Allow, want.Rules.Deny = back.Rules.Allow, back.Rules.Deny // empty lists print as []
	assert.Equal(t, want, back)

	// What it prints is a valid config file that means the same.
	s, _, errs := loadArgs(t, "-config", writeFile(t, out.String()))
	require.Empty(t, errs)
	assert.Equal(t, want, s.cfg)
}

// TestConfigFlags: every flag names a key that exists, once.
func TestConfigFlags(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range configFlags() {
		_, ok := fieldByKey(reflect.ValueOf(DefaultConfig()), f.key)
		assert.True(t, ok, "-%s names no key %s", f.name, f.key)
		assert.False(t, seen[f.key], "two flags for %s", f.key)
		seen[f.key] = true
	}
}

func TestUsage(t *testing.T) {
	var out bytes.Buffer
	code := run(context.Background(), []string{"-h"}, nil, nil, &out, &out)
	assert.Equal(t, 0, code)
	usage := out.String()
	examples := strings.Index(usage, "Examples:")
	flags := strings.Index(usage, "  -advertise-ip")
	require.Positive(t, examples)
	assert.Greater(t, flags, examples, "examples come before the flag list")
	assert.Contains(t, usage, "(config key udp_ports, default 1024-65535)")
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"-version"}, nil, nil, &out, io.Discard))
	assert.Regexp(t, `^fwproxy \S+ \(commit \S+, go1\.[0-9.]+\S*\)\n$`, out.String())
}

func TestHashPassword(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-hash-password", "alice"}, nil, strings.NewReader("s3cret\n"), &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Regexp(t, `^alice:\$2a\$10\$.{53}\n$`, out.String())

	code = run(context.Background(), []string{"-hash-password", "alice"}, nil, strings.NewReader("\n"), &out, &errOut)
	assert.Equal(t, 1, code, "an empty password is refused")
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"extra"}, {"-no-such-flag"}} {
		assert.Equal(t, 2, run(context.Background(), args, nil, nil, io.Discard, io.Discard), "%v", args)
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"lease_liner", "lease_linger", 1}, {"kitten", "sitting", 3},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, editDistance(tt.a, tt.b), "%q %q", tt.a, tt.b)
	}
	assert.Equal(t, "", closest("colour", tagNames(reflect.TypeFor[Config]())))
}

// TestAliasExpansionIsBounded: a list of aliases to one large mapping
// costs their product; the decoder stops at its budget with one error.
func TestAliasExpansionIsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("x: &m {network: 192.0.2.0/24")
	for i := range 500 {
		fmt.Fprintf(&b, ", ports%d: 1", i)
	}
	b.WriteString("}\nrules:\n  allow: [*m")
	for range 499 {
		b.WriteString(", *m")
	}
	b.WriteString("]\n")
	cfg := DefaultConfig()
	errs := decodeYAML("config.yaml", []byte(b.String()), &cfg, origins{})
	assert.Contains(t, errs.Error(), "expands to more than 100000 values")
	assert.Less(t, len(errs), maxConfigValues, "decoding stopped at the budget")
}

// TestResolveMMSConfig: mms_scrub_computer_name and external_ip reach the
// MMS filter's config, and scrubbing is on unless turned off.
func TestResolveMMSConfig(t *testing.T) {
	for _, tt := range []struct {
		name  string
		edit  func(*Config)
		scrub bool
	}{
		{"default", func(*Config) {}, true},
		{"turned off", func(c *Config) { c.MMSScrubComputerName = false }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			s, errs, _ := resolve(c, nil)
			require.Empty(t, errs)
			assert.Equal(t, tt.scrub, s.mms.ScrubComputerName)
			assert.Equal(t, s.leases.ListenIP, s.mms.ExternalIP)
		})
	}
}
