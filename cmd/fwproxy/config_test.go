package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fwproxy.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func TestParseArgs(t *testing.T) {
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
		check func(t *testing.T, c Config)
	}{
		{"defaults", nil, func(t *testing.T, c Config) {
			assert.Equal(t, DefaultConfig(), c)
		}},
		{"file overrides defaults", []string{"-config", file}, func(t *testing.T, c Config) {
			assert.Equal(t, "127.0.0.1:2080", c.Listen)
			assert.Equal(t, time.Minute, c.IdleTimeout)
			assert.Equal(t, "127.0.0.1:9480", c.MetricsListen, "keys not in the file keep their defaults")
			p, err := c.proxyConfig()
			require.NoError(t, err)
			assert.True(t, p.Rules.Connect)
			assert.False(t, p.Rules.Associate)
			require.Len(t, p.Rules.AllowDestinations, 2)
			assert.Equal(t, uint16(1755), p.Rules.AllowDestinations[0].FirstPort)
			assert.Equal(t, uint16(2048), p.Rules.AllowDestinations[1].LastPort)
		}},
		{"flags override the file, wherever they stand", []string{"-listen", "127.0.0.1:3080", "-config", file, "-idle-timeout", "0s"}, func(t *testing.T, c Config) {
			assert.Equal(t, "127.0.0.1:3080", c.Listen)
			assert.Equal(t, time.Duration(0), c.IdleTimeout)
		}},
		{"udp and mms flags", []string{"-external-ip", "127.0.0.2", "-advertise-ip", "127.0.0.9", "-udp-ports", "40000-40999",
			"-lease-linger", "0s", "-udp-idle-timeout", "1m", "-bind-timeout", "5s", "-mms-ports", "1755, 8755"}, func(t *testing.T, c Config) {
			assert.Equal(t, []uint16{1755, 8755}, c.MMSPorts)
			l, err := c.leasesConfig()
			require.NoError(t, err)
			assert.Equal(t, "127.0.0.2", l.ListenIP.String())
			assert.Equal(t, uint16(40000), l.PortMin)
			assert.Equal(t, uint16(40999), l.PortMax)
			assert.Equal(t, time.Duration(0), l.Linger)
			p, err := c.proxyConfig()
			require.NoError(t, err)
			assert.Equal(t, "127.0.0.9", p.AdvertiseIP.String())
			assert.Equal(t, "127.0.0.2", p.ExternalIP.String())
			assert.Equal(t, time.Minute, p.UDPIdleTimeout)
			assert.Equal(t, 5*time.Second, p.BindTimeout)
		}},
		{"tcp keep-alive is off unless asked for", nil, func(t *testing.T, c Config) {
			p, err := c.proxyConfig()
			require.NoError(t, err)
			assert.Zero(t, p.TCPKeepAlive)
		}},
		{"tcp keep-alive", []string{"-tcp-keepalive", "30s"}, func(t *testing.T, c Config) {
			p, err := c.proxyConfig()
			require.NoError(t, err)
			assert.Equal(t, 30*time.Second, p.TCPKeepAlive)
		}},
		{"mms disabled", []string{"-mms-ports", ""}, func(t *testing.T, c Config) {
			assert.Empty(t, c.MMSPorts)
		}},
		{"every flag", []string{"-metrics-listen", "", "-users", "/u", "-log-format", "json", "-log-level", "debug",
			"-handshake-timeout", "1s", "-dial-timeout", "2s", "-drain-timeout", "3s", "-max-sessions", "7"}, func(t *testing.T, c Config) {
			assert.Equal(t, "", c.MetricsListen)
			assert.Equal(t, "/u", c.Users)
			assert.Equal(t, "json", c.LogFormat)
			assert.Equal(t, "debug", c.LogLevel)
			assert.Equal(t, time.Second, c.HandshakeTimeout)
			assert.Equal(t, 2*time.Second, c.DialTimeout)
			assert.Equal(t, 3*time.Second, c.DrainTimeout)
			assert.Equal(t, 7, c.MaxSessions)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, act, err := parseArgs(tt.args, io.Discard)
			require.NoError(t, err)
			assert.Equal(t, actionServe, act.kind)
			tt.check(t, c)
		})
	}
}

func TestParseArgsRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		file string
		args []string
		want string
	}{
		{"unknown key", "listn: x\n", nil, "field listn not found"},
		{"bad duration", "dial_timeout: soon\n", nil, "line 1: cannot unmarshal"},
		{"zero handshake timeout", "handshake_timeout: 0s\n", nil, "handshake timeout"},
		{"bad client network", "rules: {clients: [10.0.0.0/33]}\n", nil, "rules.clients"},
		{"unknown command", "rules: {commands: [telnet]}\n", nil, "unknown command"},
		{"reversed ports", "rules: {allow: [{network: 0.0.0.0/0, ports: 9-1}]}\n", nil, "rules.allow[0].ports"},
		{"port zero", "rules: {deny: [{network: 0.0.0.0/0, ports: \"0\"}]}\n", nil, "rules.deny[0].ports"},
		{"bad flag value", "", []string{"-max-sessions", "many"}, "max-sessions"},
		{"negative max sessions", "", []string{"-max-sessions", "-1"}, "max sessions"},
		{"stray argument", "", []string{"extra"}, "unexpected arguments"},
		{"wildcard external ip", "", []string{"-external-ip", "0.0.0.0"}, "wildcard"},
		{"bad external ip", "", []string{"-external-ip", "outside"}, "external_ip"},
		{"bad udp ports", "", []string{"-udp-ports", "9-1"}, "udp_ports"},
		{"bad mms port", "", []string{"-mms-ports", "1755,x"}, "mms-ports"},
		{"negative linger", "lease_linger: -1s\n", nil, "Linger"},
		{"negative keep-alive", "tcp_keepalive: -1s\n", nil, "keep-alive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"-config", writeFile(t, tt.file)}, args...)
			}
			_, _, err := parseArgs(args, io.Discard)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestPrintConfigRoundTrips(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-print-config", "-listen", "127.0.0.1:4080"}, nil, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	var back Config
	require.NoError(t, yaml.Unmarshal(out.Bytes(), &back))
	want := DefaultConfig()
	want.Listen = "127.0.0.1:4080"
	want.Rules.Allow, want.Rules.Deny = back.Rules.Allow, back.Rules.Deny // empty lists print as []
	assert.Equal(t, want, back)

	// What it prints is a valid config file.
	_, _, err := parseArgs([]string{"-config", writeFile(t, out.String())}, io.Discard)
	require.NoError(t, err)
}

func TestHashPassword(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-hash-password", "alice"}, strings.NewReader("s3cret\n"), &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Regexp(t, `^alice:\$2a\$10\$.{53}\n$`, out.String())

	code = run(context.Background(), []string{"-hash-password", "alice"}, strings.NewReader("\n"), &out, &errOut)
	assert.Equal(t, 1, code, "an empty password is refused")
}

func TestRunFailsOnBusyAddress(t *testing.T) {
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := run(ctx, []string{"-listen", "127.0.0.1:-1", "-metrics-listen", ""}, nil, &out, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut.String(), "listen socks")
}
