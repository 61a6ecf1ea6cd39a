package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/socksclient"
	"fwproxy/internal/testbin"
)

// builtBinary is connect-min, built once for the package's tests.
func builtBinary(t *testing.T) string {
	t.Helper()
	return testbin.Build(t, ".")
}

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.RemoveAll()
	os.Exit(code)
}

// TestBinary runs the built command as fwbench does: it reports its
// address, carries a CONNECT and exits 0 on the signal, its listener
// closed.
func TestBinary(t *testing.T) {
	type test struct {
		mode string
		sig  syscall.Signal
	}
	var tests []test
	for _, m := range modes() {
		tests = append(tests, test{m, syscall.SIGTERM}, test{m, syscall.SIGINT})
	}
	bin := builtBinary(t)
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s, %v", tt.mode, tt.sig), func(t *testing.T) {
			cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-bind", "127.0.0.1", "-mode", tt.mode)
			stderr, err := cmd.StderrPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			exited := make(chan error, 1)
			var rest strings.Builder
			lines := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(stderr)
				if sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
				// Read to the end before Wait, which closes the pipe.
				io.Copy(&rest, stderr)
				exited <- cmd.Wait()
			}()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			var line string
			select {
			case line = <-lines:
			case <-time.After(ioLimit):
				t.Fatal("no listening line")
			}
			f := strings.Fields(line)
			require.Len(t, f, 5, "%q", line)
			require.Equal(t, "("+tt.mode+")", f[4])
			addr := netip.MustParseAddrPort(f[3])

			ln := listenTarget(t, "127.0.0.1")
			go func() {
				c, err := ln.Accept()
				if err == nil {
					c.Write([]byte("hello"))
					c.Close()
				}
			}()
			d := socksclient.Dialer{Proxy: addr.String(), Timeout: ioLimit}
			c, err := d.Connect(t.Context(), socksclient.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort()))
			require.NoError(t, err)
			c.SetDeadline(time.Now().Add(ioLimit))
			got, err := io.ReadAll(c)
			c.Close()
			require.NoError(t, err)
			assert.Equal(t, "hello", string(got))

			require.NoError(t, cmd.Process.Signal(tt.sig))
			select {
			case err := <-exited:
				require.NoError(t, err, "exit status 0; stderr: %s", rest.String())
				exited <- err
			case <-time.After(ioLimit):
				t.Fatal("no exit after the signal")
			}
			_, err = net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addr))
			assert.True(t, errors.Is(err, syscall.ECONNREFUSED), "the listener is closed: %v", err)
		})
	}
}

func TestRunFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-listen", "nope"},
		{"-listen", "127.0.0.1"},
		{"-bind", "localhost"},
		{"-mode", "epoll"},
		{"-max-sessions", "0"},
		{"-max-sessions", "100000"},
		{"-handshake-timeout", "0s"},
		{"-no-such-flag"},
	} {
		var stderr strings.Builder
		assert.Equal(t, 2, run(t.Context(), args, &stderr), "%q", args)
		assert.NotEmpty(t, stderr.String(), "%q says why", args)
	}
}
