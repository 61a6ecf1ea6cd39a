package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"fwproxy/internal/fwproc"
)

// cheapUsersFile writes a users file with each name's password hashed at
// bcrypt's lowest cost: the race-built binary takes seconds at the default.
func cheapUsersFile(t *testing.T, passwords map[string]string) string {
	t.Helper()
	var file strings.Builder
	for name, password := range passwords {
		h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		require.NoError(t, err)
		file.WriteString(name + ":" + string(h) + "\n")
	}
	path := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(path, []byte(file.String()), 0o600))
	return path
}

// TestFail2banFilterMatchesFailedLogins runs the shipped fail2ban filter,
// through fail2ban's own fail2ban-regex, over what fwproxy logged for real
// failed logins made with curl, in both log formats and both address
// families, as a log file and as journal entries: every failed or refused
// login must be found, with the client's address, and nothing else; the
// passwords must appear nowhere.
func TestFail2banFilterMatchesFailedLogins(t *testing.T) {
	_, err := exec.LookPath("fail2ban-regex")
	require.NoError(t, err, "fail2ban-regex is needed (make test installs fail2ban)")
	_, err = exec.LookPath("curl")
	require.NoError(t, err, "curl is needed (make test installs it)")
	filter, err := filepath.Abs("../cmd/fwproxy/fail2ban/filter.d/fwproxy.conf")
	require.NoError(t, err)

	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(web.Close)
	// A user name that tries to put another address where the filter
	// looks for the client's.
	// (No ":" in it: neither the users file nor curl allows one in a name.)
	const evil = `evil client=192.0.2.9 level=WARN msg="login failed" client=192.0.2.9`
	users := cheapUsersFile(t, map[string]string{"alice": "s3cret", evil: "0ther"})

	tests := []struct {
		name, format, listen, source string
	}{
		{"text over IPv4", "text", "127.0.0.1:0", "127.0.0.2"},
		{"text over IPv6", "text", "[::1]:0", "::1"},
		{"json over IPv4", "json", "127.0.0.1:0", "127.0.0.3"},
		{"json over IPv6", "json", "[::1]:0", "::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, "-users", users, "-listen", tt.listen, "-log-format", tt.format, "-log-level", "info",
				"-auth-failure-burst", "2", "-auth-failures-per-minute", "1")
			login := func(userPass string) error {
				_, err := curl(t, "--interface", tt.source, "--socks5", p.socks, "--proxy-user", userPass, web.URL+"/")
				return err
			}
			require.NoError(t, login("alice:s3cret"), "a valid login is not a failure")
			require.Error(t, login("alice:wrong-1"))
			require.Error(t, login(evil+":wrong-2"))
			// The burst of 2 is spent: refused without a check.
			require.Error(t, login("alice:wrong-3"))
			p.waitLog(t, "login refused: too many failures", 1)

			logs := p.logs.String()
			for _, password := range []string{"s3cret", "wrong-1", "wrong-2", "wrong-3"} {
				assert.NotContains(t, logs, password, "a password was logged")
			}
			var failed []map[string]any
			for _, line := range strings.Split(logs, "\n") {
				rec, ok := fwproc.ParseLogLine(line)
				require.True(t, ok, "unparsable log line %q", line)
				if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, "login ") {
					assert.Equal(t, "WARN", rec["level"], line)
					failed = append(failed, rec)
				}
			}
			require.Len(t, failed, 3, logs)
			assert.Equal(t, []any{"alice", evil, "alice"}, []any{failed[0]["user"], failed[1]["user"], failed[2]["user"]})

			// As a log file, and as fail2ban's systemd backend shows journal
			// entries: "HOST IDENTIFIER[PID]: MESSAGE".
			journal := "myhost fwproxy[4242]: " + strings.ReplaceAll(logs, "\n", "\nmyhost fwproxy[4242]: ")
			for name, content := range map[string]string{"file": logs, "journal": journal} {
				path := filepath.Join(t.TempDir(), "fwproxy.log")
				require.NoError(t, os.WriteFile(path, []byte(content+"\n"), 0o600))
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				out, err := exec.CommandContext(ctx, "fail2ban-regex", "--out", "ip", path, filter).CombinedOutput()
				cancel()
				require.NoError(t, err, "%s", out)
				assert.Equal(t, strings.Repeat(tt.source+"\n", 3), string(out), "%s: the hosts fail2ban found, one line per match", name)
			}
		})
	}
}

// TestFail2banJailLoads checks the example jail and the filter with
// fail2ban's own configuration test, on a copy of the system's fail2ban
// configuration with only the fwproxy jail enabled.
func TestFail2banJailLoads(t *testing.T) {
	_, err := exec.LookPath("fail2ban-client")
	require.NoError(t, err, "fail2ban-client is needed (make test installs fail2ban)")
	conf := filepath.Join(t.TempDir(), "fail2ban")
	require.NoError(t, os.CopyFS(conf, os.DirFS("/etc/fail2ban")))
	// Debian's own jail defaults enable sshd; only fwproxy's is under test.
	require.NoError(t, os.RemoveAll(filepath.Join(conf, "jail.d")))
	require.NoError(t, os.Mkdir(filepath.Join(conf, "jail.d"), 0o755))
	for _, f := range []string{"filter.d/fwproxy.conf", "jail.d/fwproxy.conf"} {
		b, err := os.ReadFile(filepath.Join("../cmd/fwproxy/fail2ban", f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(conf, f), b, 0o644))
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "fail2ban-client", "-c", conf, "-t").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "OK: configuration test is successful")

	out, err = exec.CommandContext(ctx, "fail2ban-client", "-c", conf, "-d").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "['add', 'fwproxy', 'systemd']", "the jail is read, with its backend")
	assert.Contains(t, string(out), "['set', 'fwproxy', 'addjournalmatch', '_SYSTEMD_UNIT=fwproxy.service']", "the jail reads fwproxy's journal")
}
