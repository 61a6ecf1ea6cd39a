package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace this package makes; the rest
// is "<pid>-<random>-<host>", so a sweep can tell a dead run's from a live
// one's.
const Prefix = "fwpt-"

// runDir is where iproute2 keeps named namespaces; etcDir/NAME holds
// files that `ip netns exec NAME` mounts over /etc's.
const (
	runDir = "/run/netns"
	etcDir = "/etc/netns"
)

// cmdTimeout bounds one iproute2 command.
const cmdTimeout = 20 * time.Second

// Network is one run's set of test hosts and the segments between them.
// Build it before the test starts anything in it; its methods are not for
// concurrent use while it is being built, and are afterwards.
type Network struct {
	t      testing.TB
	prefix string // Prefix, pid and the random part, with a trailing "-"
	sw     string // the switch namespace, holding the segments' bridges

	// mu guards hosts, segments and links.
	mu       sync.Mutex
	hosts    []*Host
	segments int
	links    int

	reaper      *exec.Cmd
	reaperStdin io.WriteCloser
}

// Segment is one switched network: a bridge that the hosts' legs join.
type Segment struct {
	Name     string
	V4, V6   netip.Prefix
	bridge   string
	net      *Network
	attached int
}

// Host is one namespace.
type Host struct {
	// Name is the host's role ("inside", "proxy0").
	Name string
	// NS is the namespace's name, for `ip netns exec`.
	NS    string
	net   *Network
	addrs map[*Segment][]netip.Addr
	// legOn names h's interface on each segment it is attached to.
	legOn map[*Segment]string
	legs  int
}

// New makes an empty network for t. Where namespaces cannot be made it
// skips t with the reason, or fails it when CI=true. Everything is torn
// down when t ends, and by a reaper process when the test process dies
// before that.
func New(t testing.TB) *Network {
	t.Helper()
	if err := usable(); err != nil {
		unavailable(t, err)
	}
	sweepOnce.Do(func() {
		if err := Sweep(); err != nil {
			t.Logf("netns: sweeping stale namespaces: %v", err)
		}
	})
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("netns: random name: %v", err)
	}
	n := &Network{t: t, prefix: fmt.Sprintf("%s%d-%s-", Prefix, os.Getpid(), hex.EncodeToString(rnd[:]))}
	if err := n.startReaper(); err != nil {
		unavailable(t, err)
	}
	t.Cleanup(n.teardown)
	n.sw = n.prefix + "sw"
	if err := addNamespace(n.sw); err != nil {
		unavailable(t, err)
	}
	return n
}

// unavailable ends a test that cannot have its hosts: a skip with one
// line why, or, under CI, a failure, since CI runs as root and must run
// these tests.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("netns: network namespaces are needed under CI=true: %v", err)
	}
	t.Skipf("netns: skipped, network namespaces cannot be made here: %v", err)
}

// usable says why this process cannot make namespaces, if it cannot.
func usable() error {
	if os.Geteuid() != 0 {
		return errors.New("not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("iproute2's ip is not installed (e2e/install-deps.sh installs it)")
	}
	return nil
}

var sweepOnce sync.Once

// Sweep deletes the namespaces of runs whose process is gone, killing
// whatever still runs in them (only processes such a run started can be
// there).
func Sweep() error {
	entries, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, Prefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || pidAlive(pid) {
			continue
		}
		if err := deleteNamespace(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// startReaper starts a shell that waits for this process to close its
// stdin (at teardown, or by dying) and then deletes whatever namespaces
// of this run are left, killing their processes first.
func (n *Network) startReaper() error {
	const script = `read -r _
for ns in $(ip netns list | awk '{print $1}' | grep "^$1"); do
	for p in $(ip netns pids "$ns"); do kill -KILL "$p"; done
	ip netns delete "$ns"
done`
	cmd := exec.Command("/bin/sh", "-c", script, "reaper", n.prefix)
	// Its own process group: a signal for the test's group leaves it be,
	// so it can still clean up after the test's processes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start reaper: %w", err)
	}
	n.reaper, n.reaperStdin = cmd, stdin
	return nil
}

// teardown deletes every namespace of the run and ends the reaper.
func (n *Network) teardown() {
	n.mu.Lock()
	names := []string{}
	for _, h := range n.hosts {
		names = append(names, h.NS)
	}
	n.mu.Unlock()
	if n.sw != "" {
		names = append(names, n.sw)
	}
	for _, name := range names {
		if err := deleteNamespace(name); err != nil {
			n.t.Errorf("netns: teardown: %v", err)
		}
	}
	if n.reaper != nil {
		n.reaperStdin.Close()
		done := make(chan error, 1)
		go func() { done <- n.reaper.Wait() }()
		select {
		case <-done:
		case <-time.After(cmdTimeout):
			n.reaper.Process.Kill()
			<-done
			n.t.Errorf("netns: reaper did not finish")
		}
	}
}

// addNamespace makes a namespace with its loopback up.
func addNamespace(name string) error {
	if err := ip("netns", "add", name); err != nil {
		return err
	}
	return ip("-n", name, "link", "set", "lo", "up")
}

// deleteNamespace kills what runs in the namespace and deletes it; a
// namespace that is not there is no error.
func deleteNamespace(name string) error {
	if err := os.RemoveAll(filepath.Join(etcDir, name)); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(runDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	out, err := output("ip", "netns", "pids", name)
	if err == nil {
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return ip("netns", "delete", name)
}

// ip runs one iproute2 command.
func ip(args ...string) error {
	_, err := output("ip", args...)
	return err
}

func output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// Segment adds a switched network with the given prefixes; hosts join it
// with Attach.
func (n *Network) Segment(name string, v4, v6 netip.Prefix) *Segment {
	n.t.Helper()
	n.mu.Lock()
	bridge := fmt.Sprintf("br%d", n.segments)
	n.segments++
	n.mu.Unlock()
	if err := ip("-n", n.sw, "link", "add", bridge, "type", "bridge"); err != nil {
		n.t.Fatalf("netns: segment %s: %v", name, err)
	}
	if err := ip("-n", n.sw, "link", "set", bridge, "up"); err != nil {
		n.t.Fatalf("netns: segment %s: %v", name, err)
	}
	return &Segment{Name: name, V4: v4, V6: v6, bridge: bridge, net: n}
}

// Host adds a namespace. No host forwards: IPv4 and IPv6 forwarding are
// off, and Host checks that they are.
func (n *Network) Host(name string) *Host {
	n.t.Helper()
	h := &Host{Name: name, NS: n.prefix + name, net: n, addrs: map[*Segment][]netip.Addr{}, legOn: map[*Segment]string{}}
	n.mu.Lock()
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	if err := addNamespace(h.NS); err != nil {
		n.t.Fatalf("netns: host %s: %v", name, err)
	}
	if err := h.setForwarding(false); err != nil {
		n.t.Fatalf("netns: host %s: %v", name, err)
	}
	return h
}

// forwardingKnobs are the sysctls that make a host a router.
var forwardingKnobs = []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}

func (h *Host) setForwarding(on bool) error {
	want := "0"
	if on {
		want = "1"
	}
	return h.Do(func() error {
		for _, knob := range forwardingKnobs {
			if err := os.WriteFile(knob, []byte(want), 0); err != nil {
				return fmt.Errorf("set %s: %w", knob, err)
			}
			got, err := os.ReadFile(knob)
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(got)) != want {
				return fmt.Errorf("%s is %q, want %s", knob, got, want)
			}
		}
		return nil
	})
}

// Forwarding reports whether the host forwards IPv4 or IPv6.
func (h *Host) Forwarding() (bool, error) {
	on := false
	err := h.Do(func() error {
		for _, knob := range forwardingKnobs {
			b, err := os.ReadFile(knob)
			if err != nil {
				return err
			}
			on = on || strings.TrimSpace(string(b)) != "0"
		}
		return nil
	})
	return on, err
}

// Attach gives h a leg on seg with the given addresses (each inside one
// of seg's prefixes). IPv6 addresses skip duplicate detection, so they
// work at once.
func (h *Host) Attach(seg *Segment, addrs ...netip.Addr) {
	n := h.net
	n.t.Helper()
	n.mu.Lock()
	port := fmt.Sprintf("p%d", n.links)
	n.links++
	n.mu.Unlock()
	leg := fmt.Sprintf("eth%d", h.legs)
	h.legs++
	fatal := func(err error) { n.t.Fatalf("netns: attach %s to %s: %v", h.Name, seg.Name, err) }
	if err := ip("-n", n.sw, "link", "add", port, "type", "veth", "peer", "name", leg, "netns", h.NS); err != nil {
		fatal(err)
	}
	if err := ip("-n", n.sw, "link", "set", port, "master", seg.bridge, "up"); err != nil {
		fatal(err)
	}
	h.legOn[seg] = leg
	h.AddAddrs(seg, addrs...)
	if err := ip("-n", h.NS, "link", "set", leg, "up"); err != nil {
		fatal(err)
	}
	seg.attached++
}

// AddAddrs gives h more addresses on seg, which it must be attached to.
func (h *Host) AddAddrs(seg *Segment, addrs ...netip.Addr) {
	n := h.net
	n.t.Helper()
	leg, ok := h.legOn[seg]
	fatal := func(err error) { n.t.Fatalf("netns: address of %s on %s: %v", h.Name, seg.Name, err) }
	if !ok {
		fatal(errors.New("not attached"))
	}
	for _, a := range addrs {
		var args []string
		switch {
		case a.Is4() && seg.V4.Contains(a):
			args = []string{"-n", h.NS, "addr", "add", netip.PrefixFrom(a, seg.V4.Bits()).String(), "dev", leg}
		case a.Is6() && seg.V6.Contains(a):
			args = []string{"-n", h.NS, "-6", "addr", "add", netip.PrefixFrom(a, seg.V6.Bits()).String(), "dev", leg, "nodad"}
		default:
			fatal(fmt.Errorf("address %v is not in %v or %v", a, seg.V4, seg.V6))
		}
		if err := ip(args...); err != nil {
			fatal(err)
		}
		h.addrs[seg] = append(h.addrs[seg], a)
	}
}

// Addrs are h's addresses on seg, in the order they were given.
func (h *Host) Addrs(seg *Segment) []netip.Addr {
	return append([]netip.Addr(nil), h.addrs[seg]...)
}

// DefaultRoute sends what h has no nearer route for to gw.
func (h *Host) DefaultRoute(gw netip.Addr) {
	h.net.t.Helper()
	family := "-4"
	if gw.Is6() {
		family = "-6"
	}
	if err := ip("-n", h.NS, family, "route", "add", "default", "via", gw.String()); err != nil {
		h.net.t.Fatalf("netns: route on %s: %v", h.Name, err)
	}
}

// IP returns h's address on seg: IPv6 when v6, else IPv4. It fails the
// test when h has none.
func (h *Host) IP(seg *Segment, v6 bool) netip.Addr {
	h.net.t.Helper()
	for _, a := range h.addrs[seg] {
		if a.Is6() == v6 {
			return a
		}
	}
	h.net.t.Fatalf("netns: %s has no %s address on %s", h.Name, map[bool]string{false: "IPv4", true: "IPv6"}[v6], seg.Name)
	return netip.Addr{}
}

// Do runs f on an OS thread that has entered h's namespace. Sockets that
// f opens belong to h for their whole life, whichever thread uses them
// later; goroutines that f starts do not run in h, so f must open its
// sockets itself. f may block. The thread returns to the namespace it came
// from, or, should that fail, dies with the goroutine (the runtime never
// reuses a thread still locked when its goroutine ends), so no other
// goroutine ever runs in h by accident. The runtime starts new threads
// from a template thread, never from a locked one, so none inherits h.
func (h *Host) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored := false
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			}
		}()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			restored = true
			errc <- fmt.Errorf("netns: open own namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(filepath.Join(runDir, h.NS), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			restored = true
			errc <- fmt.Errorf("netns: open %s: %w", h.NS, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			restored = true
			errc <- fmt.Errorf("netns: enter %s: %w", h.NS, err)
			return
		}
		ferr := f()
		restored = unix.Setns(orig, unix.CLONE_NEWNET) == nil
		errc <- ferr
	}()
	return <-errc
}

// DialContext connects from h, as net.Dialer does.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Listen opens a TCP listener on h; the test closes it.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

// ListenUDP opens a UDP socket on h; the test closes it.
func (h *Host) ListenUDP(network string, addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
		return err
	})
	return c, err
}

// HTTPClient is an HTTP client whose connections come from h.
func (h *Host) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: h.DialContext, DisableKeepAlives: true}}
}

// SetHosts gives the programs that Command starts in h an /etc/hosts of
// their own with these lines (ip netns exec mounts it over the machine's);
// removed at teardown.
func (h *Host) SetHosts(lines ...string) {
	h.net.t.Helper()
	dir := filepath.Join(etcDir, h.NS)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.net.t.Fatalf("netns: hosts file of %s: %v", h.Name, err)
	}
	text := "127.0.0.1 localhost\n::1 localhost\n" + strings.Join(lines, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(text), 0o644); err != nil {
		h.net.t.Fatalf("netns: hosts file of %s: %v", h.Name, err)
	}
}

// Command runs name in h through `ip netns exec`, which execs it: the
// process's pid is the program's own.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}
