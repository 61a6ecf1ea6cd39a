package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unansweredListener is a loopback port whose accept queue is full: the
// kernel drops further SYNs, so a connect to it waits until given up.
func unansweredListener(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { syscall.Close(fd) })
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, syscall.Listen(fd, 0))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*syscall.SockaddrInet4).Port))
	// Queue connections until one no longer completes: the queue is full.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("the kernel completes connections beyond a full accept queue here")
	return addr
}

// TestDialTimeoutWithoutDeadline: a CONNECT's dial, given its context
// with the deadline hidden (withoutDeadline), still ends when the context
// does, with a timeout, through the real dialer, with and without a
// bound source address.
func TestDialTimeoutWithoutDeadline(t *testing.T) {
	dst := unansweredListener(t)
	tests := []struct {
		name     string
		external netip.Addr
	}{
		{"kernel's source", netip.Addr{}},
		{"bound to the external IP", netip.MustParseAddr("127.0.0.1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.ExternalIP = tt.external
			s, err := New(cfg, Deps{})
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				c, err := s.dialFromExternal(withoutDeadline{ctx}, "tcp", dst.String())
				if c != nil {
					c.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				require.Error(t, err)
				var ne net.Error
				assert.True(t, errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded), "a timeout: %v", err)
				assert.Equal(t, ReplyTTLExpired, replyForDialError(err))
			case <-time.After(testTimeout):
				t.Fatal("the dial did not end with its context")
			}
		})
	}
}
