package fwproc_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/fwproc"
)

const testTimeout = 30 * time.Second

var fwproxyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fwproc-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fwproxyBin = filepath.Join(dir, "fwproxy")
	if out, err := exec.Command("go", "build", "-o", fwproxyBin, "../../cmd/fwproxy").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build fwproxy: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestStartReadsListeningLine runs the real fwproxy in both log formats:
// the addresses come from its "listening" line and serve, and it stops
// cleanly on SIGTERM.
func TestStartReadsListeningLine(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			var wrapped bool
			var seen int
			p, err := fwproc.Start(context.Background(), fwproc.Config{
				Binary: fwproxyBin,
				Args:   []string{"-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0", "-log-format", format},
				Command: func(name string, args ...string) *exec.Cmd {
					wrapped = true
					return exec.Command(name, args...)
				},
				OnLine:       func(string) { seen++ },
				StartTimeout: testTimeout,
			})
			require.NoError(t, err)
			assert.True(t, wrapped, "the command factory made the command")
			c, err := net.DialTimeout("tcp", p.Socks, testTimeout)
			require.NoError(t, err)
			c.SetDeadline(time.Now().Add(testTimeout))
			_, err = c.Write([]byte{5, 1, 0})
			require.NoError(t, err)
			b := make([]byte, 2)
			_, err = io.ReadFull(c, b)
			require.NoError(t, err)
			assert.Equal(t, []byte{5, 0}, b, "Socks is the SOCKS listener")
			c.Close()
			m, err := net.DialTimeout("tcp", p.Metrics, testTimeout)
			require.NoError(t, err, "Metrics is a listener")
			m.Close()

			require.NoError(t, p.Stop(testTimeout))
			assert.True(t, p.Logs.Contains("listening", p.Socks))
			assert.Equal(t, len(p.Logs.Lines()), seen, "OnLine saw every line")
			assert.NoError(t, p.Stop(testTimeout), "a second Stop returns the same exit")
		})
	}
}

func TestStartFailures(t *testing.T) {
	tests := []struct {
		name    string
		cfg     fwproc.Config
		ctx     func() context.Context
		wantErr string
	}{
		{"exits before listening", fwproc.Config{Binary: fwproxyBin, Args: []string{"-no-such-flag"}}, context.Background, "exited before listening"},
		{"never listens", fwproc.Config{Binary: "sleep", Args: []string{"600"}, StartTimeout: 100 * time.Millisecond}, context.Background, `did not log "listening"`},
		{"context ends", fwproc.Config{Binary: "sleep", Args: []string{"600"}, StartTimeout: testTimeout}, func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, "context canceled"},
		{"no binary", fwproc.Config{Binary: "/nonexistent/fwproxy"}, context.Background, "start /nonexistent/fwproxy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := fwproc.Start(tt.ctx(), tt.cfg)
			require.Error(t, err)
			assert.Nil(t, p)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

// TestStopKillsGroup: a process that ignores SIGTERM is killed after the
// timeout, with its children: the child here holds stderr open, so Stop
// returns only once the whole group is gone.
func TestStopKillsGroup(t *testing.T) {
	script := `trap "" TERM; echo 'msg=listening socks=127.0.0.1:1' >&2; sleep 600 & wait`
	p, err := fwproc.Start(context.Background(), fwproc.Config{Binary: "sh", Args: []string{"-c", script}, StartTimeout: testTimeout})
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:1", p.Socks)
	assert.Empty(t, p.Metrics)
	assert.Positive(t, p.Pid())
	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop(100 * time.Millisecond) }()
	select {
	case err := <-stopped:
		assert.ErrorIs(t, err, fwproc.ErrStopTimeout)
	case <-time.After(testTimeout):
		t.Fatal("Stop did not return")
	}
}

func TestLogsBound(t *testing.T) {
	l := fwproc.NewLogs(4)
	for i := range 10 {
		l.Add(fmt.Sprint("line ", i))
	}
	assert.LessOrEqual(t, len(l.Lines()), 4)
	assert.Equal(t, 10, len(l.Lines())+l.Dropped(), "every line kept or counted")
	assert.True(t, l.Contains("line 9"), "the newest lines stay")
	assert.False(t, l.Contains("line 0"))
	fmt.Fprintf(l, "a\nb x\n")
	assert.Equal(t, 1, l.Count("b x"))
}

func TestParseLogLine(t *testing.T) {
	tests := []struct {
		line string
		want map[string]any
		ok   bool
	}{
		{`{"msg":"listening","socks":"127.0.0.1:1080"}`, map[string]any{"msg": "listening", "socks": "127.0.0.1:1080"}, true},
		{`time=2026-01-01T00:00:00Z level=INFO msg=listening socks=127.0.0.1:1080`, map[string]any{"time": "2026-01-01T00:00:00Z", "level": "INFO", "msg": "listening", "socks": "127.0.0.1:1080"}, true},
		{`msg="login failed" client=[::1]:5 err="a \"quoted\" word"`, map[string]any{"msg": "login failed", "client": "[::1]:5", "err": `a "quoted" word`}, true},
		{`panic: something`, nil, false},
		{`msg="unterminated`, nil, false},
		{``, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			got, ok := fwproc.ParseLogLine(tt.line)
			assert.Equal(t, tt.ok, ok)
			if tt.ok {
				assert.Equal(t, tt.want, got)
			}
		})
	}
}
