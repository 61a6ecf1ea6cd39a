package fwproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// DefaultStartTimeout bounds the wait for the "listening" line unless
// Config says otherwise: generous for a race-built binary on a loaded
// machine.
const DefaultStartTimeout = 30 * time.Second

// maxLogLine is the longest stderr line read whole; fwproxy's lines are
// far shorter.
const maxLogLine = 1 << 20

// Config says how to run fwproxy.
type Config struct {
	// Binary is the fwproxy executable.
	Binary string
	// Args are its arguments. To learn the addresses, they should let it
	// log its "listening" line in either format (any -log-format) at
	// info level or below.
	Args []string
	// Command builds the command; nil uses exec.Command. The e2e tests
	// pass a network namespace host's, which runs fwproxy inside it. Its
	// Stderr must be left unset; fwproc reads it.
	Command func(name string, args ...string) *exec.Cmd
	// OnLine, when set, is called with every line fwproxy writes to
	// stderr, from the goroutine that reads them.
	OnLine func(line string)
	// StartTimeout bounds the wait for the "listening" line; 0 means
	// DefaultStartTimeout.
	StartTimeout time.Duration
	// MaxLogLines bounds Logs (DefaultMaxLogLines when 0).
	MaxLogLines int
}

// Proc is a running fwproxy.
type Proc struct {
	// Socks and Metrics are the addresses of its "listening" line
	// (Metrics is empty when it serves none).
	Socks, Metrics string
	// Logs holds every line it wrote to stderr.
	Logs *Logs

	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, set before done is closed
}

// Start runs fwproxy and waits until it logs "listening", exits, the
// start timeout passes or ctx ends; in the last three cases the process
// is stopped and waited for, and the error carries its log. ctx bounds
// only the start, not the process's life.
func Start(ctx context.Context, cfg Config) (*Proc, error) {
	newCmd := cfg.Command
	if newCmd == nil {
		newCmd = exec.Command
	}
	cmd := newCmd(cfg.Binary, cfg.Args...)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = procAttr()
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("fwproc: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("fwproc: start %s: %w", cfg.Binary, err)
	}
	p := &Proc{Logs: NewLogs(cfg.MaxLogLines), cmd: cmd, done: make(chan struct{})}
	type addrs struct{ socks, metrics string }
	ready := make(chan addrs, 1)
	go p.readLog(stderr, cfg.OnLine, func(line string) {
		if socks, metrics, ok := listeningAddrs(line); ok {
			select {
			case ready <- addrs{socks, metrics}:
			default: // a later "listening" line (a reload) changes nothing
			}
		}
	})

	limit := cfg.StartTimeout
	if limit <= 0 {
		limit = DefaultStartTimeout
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case a := <-ready:
		p.Socks, p.Metrics = a.socks, a.metrics
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("fwproc: %s exited before listening: %v\n%s", cfg.Binary, p.err, p.Logs)
	case <-timer.C:
		p.Stop(limit)
		return nil, fmt.Errorf("fwproc: %s did not log \"listening\" within %v\n%s", cfg.Binary, limit, p.Logs)
	case <-ctx.Done():
		p.Stop(limit)
		return nil, fmt.Errorf("fwproc: waiting for %s to listen: %w", cfg.Binary, ctx.Err())
	}
}

// readLog keeps stderr's lines until the process closes it, then reaps the
// process: it is the only caller of Wait.
func (p *Proc) readLog(r io.Reader, onLine, watch func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLogLine)
	for sc.Scan() {
		line := sc.Text()
		p.Logs.Add(line)
		watch(line)
		if onLine != nil {
			onLine(line)
		}
	}
	// A line over the limit ends the scan: keep reading so the process
	// never blocks on a full pipe.
	io.Copy(io.Discard, r)
	p.err = p.cmd.Wait()
	close(p.done)
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit: nil for status 0. Valid once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// ErrStopTimeout: the process did not exit within the time after SIGTERM
// and was killed.
var ErrStopTimeout = errors.New("fwproc: no exit after SIGTERM; killed")

// Stop sends SIGTERM and waits up to timeout for the process to exit; then
// it kills the process group and waits. It returns the exit (nil for
// status 0), or ErrStopTimeout. Safe to call more than once and after
// the process exited.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.err
	case <-timer.C:
		p.Kill()
		<-p.done
		return ErrStopTimeout
	}
}

// Kill sends SIGKILL to the process's group (to the process alone when it
// has no group of its own), as a crash would end it. It does not wait.
func (p *Proc) Kill() error {
	if p.cmd.SysProcAttr != nil && p.cmd.SysProcAttr.Setpgid {
		if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err == nil {
			return nil
		}
	}
	return p.cmd.Process.Kill()
}
