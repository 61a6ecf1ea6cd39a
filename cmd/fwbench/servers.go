package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// fwproxyOptions are what a scenario needs from its fwproxy instance.
type fwproxyOptions struct {
	// maxLeases raises the lease caps (table and per client) and the session
	// limit, for the idle-lease memory test; 0 keeps the defaults.
	maxLeases int
	// linger is -lease-linger; 0 keeps the default.
	linger time.Duration
	// mmsPort puts the MMS filter on this port; 0: no filter.
	mmsPort uint16
}

// startFwproxy runs the fwproxy binary on a free loopback port. Lease
// sockets bind 127.0.0.2 so a client's port on 127.0.0.1 stays free for the
// client itself. Logging is at warn, as danted's rules log nothing per
// session: both proxies are measured without per-session log lines.
func startFwproxy(ctx context.Context, bin, dir string, opt fwproxyOptions) (*proc, error) {
	addr, err := freeTCPPort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	mms := ""
	if opt.mmsPort != 0 {
		mms = fmt.Sprint(opt.mmsPort)
	}
	args := []string{
		"-listen", addr, "-metrics-listen", "", "-external-ip", externalIP,
		"-log-level", "warn", "-drain-timeout", "1s", "-mms-ports", mms,
		// The targets are on loopback, the proxy's host, and every load
		// comes from 127.0.0.1: allow the one, do not cap the other
		// (danted has no such cap either).
		"-allow", "127.0.0.0/8", "-max-sessions-per-client", "0",
	}
	if opt.maxLeases > 0 {
		cfg := filepath.Join(dir, "fwproxy-leases.yaml")
		if err := os.WriteFile(cfg, []byte(fwproxyLeaseConfig(opt.maxLeases)), 0o600); err != nil {
			return nil, fmt.Errorf("write fwproxy config: %w", err)
		}
		args = append(args, "-config", cfg, "-max-sessions", fmt.Sprint(opt.maxLeases+1024))
	}
	if opt.linger > 0 {
		args = append(args, "-lease-linger", opt.linger.String())
	}
	return startProc(ctx, "fwproxy", bin, addr, args...)
}

// externalIP is fwproxy's -external-ip in every scenario.
const externalIP = "127.0.0.2"

// fwproxyLeaseConfig is a YAML file that lifts the lease caps to n, all
// from one client IP.
func fwproxyLeaseConfig(n int) string {
	return fmt.Sprintf("leases:\n  max_leases: %d\n  max_leases_per_client: %d\n", n, n)
}

// startDanted writes a loopback-only danted configuration into dir and
// runs danted in the foreground with it.
func startDanted(ctx context.Context, bin, dir string) (*proc, error) {
	addr, err := freeTCPPort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	conf := filepath.Join(dir, "danted.conf")
	logFile := filepath.Join(dir, "danted.log")
	if err := os.WriteFile(conf, []byte(dantedConfig(port, logFile)), 0o600); err != nil {
		return nil, fmt.Errorf("write danted config: %w", err)
	}
	return startProc(ctx, "danted", bin, addr, "-f", conf, "-p", filepath.Join(dir, "danted.pid"))
}

// dantedConfig is a danted.conf that serves only loopback, with no
// authentication and nothing logged per session (errors only), which is
// how fwproxy runs beside it.
func dantedConfig(port, logFile string) string {
	return fmt.Sprintf(`# written by fwbench; loopback only
logoutput: %s
internal: 127.0.0.1 port = %s
external: 127.0.0.1
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody

client pass {
	from: 127.0.0.0/8 to: 0.0.0.0/0
	log: error
}

socks pass {
	from: 127.0.0.0/8 to: 0.0.0.0/0
	command: connect udpassociate bindreply udpreply
	log: error
}
`, logFile, port)
}

// startMicrosocks runs microsocks on a free loopback port, its outgoing
// connections bound to 127.0.0.1 like danted's.
func startMicrosocks(ctx context.Context, bin string) (*proc, error) {
	addr, err := freeTCPPort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	return startProc(ctx, "microsocks", bin, addr, "-i", "127.0.0.1", "-p", port, "-b", "127.0.0.1")
}

// startConnectMin runs connect-min in mode (netpoll or threads) on a free
// loopback port, its outgoing connections bound to 127.0.0.1 like
// microsocks'.
func startConnectMin(ctx context.Context, bin, mode string) (*proc, error) {
	addr, err := freeTCPPort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	return startProc(ctx, "connect-min "+mode, bin, addr, "-listen", addr, "-bind", "127.0.0.1", "-mode", mode)
}

// findBinary returns path when it is an executable file, else "".
func findBinary(path string) string { return findDanted(path) }

// findDanted returns the danted binary's path, or "" when it is absent.
func findDanted(path string) string {
	if path == "" {
		return ""
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return ""
	}
	return path
}
