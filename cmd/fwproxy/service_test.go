package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The files that make fwproxy a service, checked as an operator would use
// them.

// TestExampleConfig: the example configuration passes -check-config, with
// only the warning that its documentation external_ip is not this host's.
func TestExampleConfig(t *testing.T) {
	users := usersFile(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-check-config", "-config", "config.example.yaml", "-users", users}, nil, nil, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	warnings := strings.Count(errOut.String(), "warning:")
	assert.Equal(t, 1, warnings, errOut.String())
	assert.Contains(t, errOut.String(), "external_ip: 203.0.113.10 is not an address of this host")

	s, _, errs := loadArgs(t, "-config", "config.example.yaml", "-users", users)
	require.Empty(t, errs)
	assert.Equal(t, "203.0.113.10", s.leases.ListenIP.String())
	assert.False(t, s.proxy.Rules.ClientAllowed(netip.MustParseAddr("198.51.100.7")), "only the inside network is a client")
	assert.True(t, s.proxy.Rules.ClientAllowed(netip.MustParseAddr("192.0.2.50")))
	assert.False(t, s.proxy.Rules.DestinationAllowed(netip.MustParseAddrPort("192.168.1.1:1755")), "private networks are denied")
	assert.True(t, s.proxy.Rules.DestinationAllowed(netip.MustParseAddrPort("203.0.113.80:1755")))
	assert.False(t, s.proxy.Rules.DestinationAllowed(netip.MustParseAddrPort("203.0.113.80:22")), "only media ports outside the media farm")
	assert.True(t, s.proxy.Rules.DestinationAllowed(netip.MustParseAddrPort("198.51.100.20:8080")))
}

// unitDirectives parses a unit file into directive -> values.
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, "unit line %q", line)
		out[k] = append(out[k], v)
	}
	require.NoError(t, sc.Err())
	return out
}

func TestSystemdUnit(t *testing.T) {
	unit := unitDirectives(t, "fwproxy.service")
	tests := []struct{ key, want string }{
		{"User", "fwproxy"},
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"PrivateTmp", "yes"},
		{"RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"},
		{"CapabilityBoundingSet", ""},
		{"LimitNOFILE", "16384"},
		{"ExecReload", "/bin/kill -HUP $MAINPID"},
		{"ExecStart", "/usr/local/bin/fwproxy -config /etc/fwproxy/config.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			assert.Equal(t, []string{tt.want}, unit[tt.key])
		})
	}
	// LimitNOFILE covers the default caps: a socket per lease and three per
	// session, plus room for listeners and scrapes.
	d := DefaultConfig()
	assert.GreaterOrEqual(t, 16384, d.Leases.MaxLeases+3*d.MaxSessions+256)

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: fwproxy.service is not verified (apt-get install systemd)")
	}
	// verify needs the binary the unit names: point it at a built one.
	dir := t.TempDir()
	body, err := os.ReadFile("fwproxy.service")
	require.NoError(t, err)
	body = bytes.ReplaceAll(body, []byte("/usr/local/bin/fwproxy"), []byte(fwproxyBinary(t)))
	path := filepath.Join(dir, "fwproxy.service")
	require.NoError(t, os.WriteFile(path, body, 0o644))
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify has remarks")
}

// makeCmd runs make at the repository root, outside any make that runs
// the tests (its jobserver and flags must not leak in).
func makeCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	cmd := exec.Command("make", append([]string{"-C", "../.."}, args...)...)
	for _, e := range os.Environ() {
		if k, _, _ := strings.Cut(e, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
			cmd.Env = append(cmd.Env, e)
		}
	}
	return cmd
}

func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary through make")
	}
	dest, bin := t.TempDir(), t.TempDir()
	install := func() {
		out, err := makeCmd(t, "install", "DESTDIR="+dest, "PREFIX=/usr", "SYSCONFDIR=/etc", "BIN="+bin).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	install()
	files := []struct {
		path string
		mode os.FileMode
	}{
		{"/usr/bin/fwproxy", 0o755},
		{"/usr/lib/systemd/system/fwproxy.service", 0o644},
		{"/usr/lib/sysusers.d/fwproxy.conf", 0o644},
		{"/etc/fwproxy/config.yaml", 0o644},
		{"/etc/fwproxy/config.example.yaml", 0o644},
		{"/usr/share/doc/fwproxy/README.md", 0o644},
		{"/usr/share/doc/fwproxy/LICENSE", 0o644},
	}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(dest, f.path))
		if assert.NoError(t, err, f.path) {
			assert.Equal(t, f.mode, fi.Mode().Perm(), f.path)
		}
	}
	unit := unitDirectives(t, filepath.Join(dest, "/usr/lib/systemd/system/fwproxy.service"))
	assert.Equal(t, []string{"/usr/bin/fwproxy -config /etc/fwproxy/config.yaml"}, unit["ExecStart"], "paths follow PREFIX")

	out, err := exec.Command(filepath.Join(dest, "/usr/bin/fwproxy"), "-version").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.NotContains(t, string(out), "fwproxy devel", "make build stamps the version from git")

	// A second install keeps the operator's configuration.
	conf := filepath.Join(dest, "/etc/fwproxy/config.yaml")
	require.NoError(t, os.WriteFile(conf, []byte("listen: 192.0.2.1:1080\n"), 0o640))
	install()
	body, err := os.ReadFile(conf)
	require.NoError(t, err)
	assert.Equal(t, "listen: 192.0.2.1:1080\n", string(body))
}

func TestMakeStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary through make")
	}
	bin := t.TempDir()
	out, err := makeCmd(t, "static", "BIN="+bin).CombinedOutput()
	require.NoError(t, err, "%s", out)
	f, err := elf.Open(filepath.Join(bin, "fwproxy"))
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		assert.NotEqual(t, elf.PT_INTERP, p.Type, "a static binary has no dynamic loader")
	}
	libs, err := f.ImportedLibraries()
	require.NoError(t, err)
	assert.Empty(t, libs)

}
