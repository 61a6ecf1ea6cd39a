package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a server process the driver started. Its whole process group is
// signalled on stop, so a forking server (danted) leaves nothing behind.
type proc struct {
	name   string
	cmd    *exec.Cmd
	addr   string // the SOCKS address it serves
	exited chan struct{}
	err    error // Wait's result, set before exited is closed

	stopOnce sync.Once
	// output keeps the process's stderr and stdout for error messages.
	output *tailBuffer
}

// startProc starts path with args in its own process group and waits until
// addr accepts TCP connections, the process exits, or ctx ends. A server
// without TCP (addr "") is not waited for: its first client retries.
func startProc(ctx context.Context, name, path, addr string, args ...string) (*proc, error) {
	cmd := exec.Command(path, args...)
	out := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, addr: addr, exited: make(chan struct{}), output: out}
	go p.wait()
	if addr == "" {
		return p, nil
	}
	if err := p.waitListening(ctx, 10*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// wait reaps the process; it is the only caller of cmd.Wait.
func (p *proc) wait() {
	p.err = p.cmd.Wait()
	close(p.exited)
}

// waitListening polls addr until a TCP connect succeeds.
func (p *proc) waitListening(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", p.addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before listening (%v): %s", p.name, p.err, p.output)
		case <-ctx.Done():
			return fmt.Errorf("%s not listening on %s: %w: %s", p.name, p.addr, ctx.Err(), p.output)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM to the process group, and SIGKILL when it has not
// exited within five seconds. Safe to call more than once.
func (p *proc) stop() {
	p.stopOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.exited
		}
		// Children of a forking server may outlive their parent by a
		// moment; make sure none does.
		syscall.Kill(-pgid, syscall.SIGKILL)
		reapGroup(pgid)
	})
}

// rssKiB is the process's resident set size from /proc.
func (p *proc) rssKiB() (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

// parseVmRSS finds "VmRSS:  1234 kB" in a /proc/PID/status text.
func parseVmRSS(status []byte) (int, error) {
	for line := range strings.SplitSeq(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q", line)
		}
		return strconv.Atoi(f[0])
	}
	return 0, errors.New("no VmRSS line")
}

// freeTCPPort returns a loopback address whose port was free a moment ago,
// for servers that cannot report the port they chose.
func freeTCPPort(ip string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(t.b.String())
}
