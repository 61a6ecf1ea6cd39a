package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/testbin"
)

// These tests drive the real binary: signals, reloads and start-up are
// properties of the process, not of a function.

// daemonTimeout bounds every wait on the daemon; generous for a loaded
// machine, but finite.
const daemonTimeout = 30 * time.Second

// fwproxyBinary is the daemon, built once for the package's tests.
func fwproxyBinary(t *testing.T) string {
	t.Helper()
	return testbin.Build(t, ".")
}

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.RemoveAll()
	os.Exit(code)
}

// daemon is a running fwproxy process; cleanup stops it with SIGTERM and
// requires a clean exit.
type daemonProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	seen   []string      // every stderr line read so far
	next   int           // waitLog's position in seen
	more   chan struct{} // a line was added to seen (capacity 1)
	exited chan struct{}
	err    error // Wait's result, once exited is closed
}

func startDaemon(t *testing.T, args ...string) *daemonProc {
	t.Helper()
	cmd := exec.Command(fwproxyBinary(t), args...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	d := &daemonProc{t: t, cmd: cmd, more: make(chan struct{}, 1), exited: make(chan struct{})}
	go d.readLoop(stderr)
	t.Cleanup(func() {
		if d.running() {
			cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-d.exited:
		case <-time.After(daemonTimeout):
			cmd.Process.Kill()
			<-d.exited
			t.Errorf("fwproxy did not stop on SIGTERM\n%s", d.log())
		}
		assert.NoError(t, d.err, "fwproxy exit\n%s", d.log())
	})
	return d
}

// readLoop forwards stderr lines until the process closes it, then reaps
// the process.
func (d *daemonProc) readLoop(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		d.mu.Lock()
		d.seen = append(d.seen, sc.Text())
		d.mu.Unlock()
		select {
		case d.more <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
	d.err = d.cmd.Wait()
	close(d.exited)
}

func (d *daemonProc) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.seen, "\n")
}

func (d *daemonProc) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// match looks for re in the lines not yet passed by waitLog.
func (d *daemonProc) match(rx *regexp.Regexp) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	for ; d.next < len(d.seen); d.next++ {
		if m := rx.FindStringSubmatch(d.seen[d.next]); m != nil {
			d.next++
			return m
		}
	}
	return nil
}

// waitLog returns the submatches of the next stderr line matching re.
func (d *daemonProc) waitLog(re string) []string {
	d.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(daemonTimeout)
	for {
		if m := d.match(rx); m != nil {
			return m
		}
		select {
		case <-d.more:
		case <-d.exited:
			if m := d.match(rx); m != nil {
				return m
			}
			d.t.Fatalf("fwproxy exited before logging %q: %v\n%s", re, d.err, d.log())
		case <-deadline:
			d.t.Fatalf("fwproxy did not log %q\n%s", re, d.log())
		}
	}
}

// addrs waits for the "listening" line and returns the SOCKS and metrics
// addresses.
func (d *daemonProc) addrs() (socks, metrics string) {
	d.t.Helper()
	m := d.waitLog(`msg=listening socks=(\S+) metrics=(\S+)`)
	return m[1], m[2]
}

// greets reports whether the proxy answers a SOCKS5 greeting (no
// authentication) on addr, or closes the connection without a word.
func greets(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, daemonTimeout)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(daemonTimeout))
	_, err = c.Write([]byte{5, 1, 0})
	require.NoError(t, err)
	b := make([]byte, 2)
	_, err = io.ReadFull(c, b)
	if err != nil {
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "the proxy neither answered nor closed")
		return false
	}
	require.Equal(t, []byte{5, 0}, b)
	return true
}

// scrape returns the value of one series in /metrics, or "" when absent.
func scrape(t *testing.T, metricsAddr, series string) string {
	t.Helper()
	client := http.Client{Timeout: daemonTimeout}
	resp, err := client.Get("http://" + metricsAddr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestReloadThroughTheBinary edits the file, sends SIGHUP and checks each
// step took effect, or that a bad step changed nothing.
func TestReloadThroughTheBinary(t *testing.T) {
	const base = "listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\nlog_level: debug\n"
	path := writeFile(t, base+"rules:\n  clients: [192.0.2.0/24]\n")
	d := startDaemon(t, "-config", path)
	socks, metricsAddr := d.addrs()
	require.False(t, greets(t, socks), "loopback is not in rules.clients yet")
	assert.Equal(t, "0", scrape(t, metricsAddr, `fwproxy_config_reloads_total{result="failure"}`))
	assert.Equal(t, "0", scrape(t, metricsAddr, `fwproxy_config_reloads_total{result="success"}`))
	started := scrape(t, metricsAddr, "fwproxy_config_last_reload_success_timestamp_seconds")
	require.NotEmpty(t, started)

	steps := []struct {
		name           string
		file           string
		logs           []string // what the daemon logs about the reload, in order
		greets         bool
		success, fails string
	}{
		{"clients rule applies", base + "rules:\n  clients: [127.0.0.0/8]\n",
			[]string{`msg="config reloaded" changed=rules.clients`}, true, "1", "0"},
		{"a bad file keeps everything", base + "rules:\n  clients: [192.0.2.0/24, 10.0.0.0/33]\n",
			[]string{`rules.clients[1]: \"10.0.0.0/33\" is not a CIDR network`, `msg="config reload failed; the running configuration is unchanged" errors=1`}, true, "1", "1"},
		{"a syntax error keeps everything", base + "rules: {clients: [192.0.2.0/24]\n",
			[]string{`YAML syntax error`, `msg="config reload failed`}, true, "1", "2"},
		{"restart-only keys are kept and named", "listen: 127.0.0.1:1\nmetrics_listen: 127.0.0.1:0\nrules:\n  clients: [192.0.2.0/24]\n",
			[]string{`msg="config reload: these settings need a restart; keeping their running values" keys=listen`, `msg="config reloaded" changed="log_level, rules.clients"`}, false, "2", "2"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(path, []byte(st.file), 0o600))
			require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
			for _, l := range st.logs {
				d.waitLog(regexp.QuoteMeta(l))
			}
			assert.Equal(t, st.greets, greets(t, socks), "the running SOCKS listener, whatever the file says")
			assert.Equal(t, st.success, scrape(t, metricsAddr, `fwproxy_config_reloads_total{result="success"}`))
			assert.Equal(t, st.fails, scrape(t, metricsAddr, `fwproxy_config_reloads_total{result="failure"}`))
		})
	}
	assert.NotEqual(t, started, scrape(t, metricsAddr, "fwproxy_config_last_reload_success_timestamp_seconds"))
}

// TestEarlySIGHUP sends SIGHUP while the daemon is still starting (before
// it reads its configuration and hashes for the users file), and again
// and again until it serves: it must neither die nor stop serving.
//
// The configuration file is a FIFO: the daemon's open of it returns only
// once the test opens the other end, so the test knows the daemon is
// inside its start-up (past the Go runtime's own start, whose few
// microseconds no program can cover) without sleeping.
func TestEarlySIGHUP(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "config.yaml")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	conf := "listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\nusers: " + usersFile(t) + "\n"
	// What reloads will read once the FIFO has been read.
	plain := filepath.Join(dir, "plain.yaml")
	require.NoError(t, os.WriteFile(plain, []byte(conf), 0o600))

	d := startDaemon(t, "-config", fifo)
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // returns once the daemon opened it
	require.NoError(t, err)
	require.NoError(t, os.Rename(plain, fifo))
	hup := func() { require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP)) }
	for range 20 {
		hup()
	}
	_, err = io.WriteString(w, conf)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	for range 20 { // during the users file's bcrypt work
		hup()
	}
	socks, metricsAddr := d.addrs()
	for range 20 {
		hup()
	}
	d.waitLog(`msg="config reloaded"`)
	require.True(t, d.running(), d.log())

	c, err := net.DialTimeout("tcp", socks, daemonTimeout)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(daemonTimeout))
	_, err = c.Write([]byte{5, 1, 2}) // username/password
	require.NoError(t, err)
	b := make([]byte, 2)
	_, err = io.ReadFull(c, b)
	require.NoError(t, err)
	assert.Equal(t, []byte{5, 2}, b, "the daemon serves")
	assert.Equal(t, "0", scrape(t, metricsAddr, `fwproxy_config_reloads_total{result="failure"}`))
}
