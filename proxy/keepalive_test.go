package proxy

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// keepAliveOn reads SO_KEEPALIVE (and, when on, TCP_KEEPIDLE: the idle time before the first probe) of c.
func keepAliveOn(t *testing.T, c net.Conn) (bool, time.Duration) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	var on, intvl int
	var serr error
	require.NoError(t, rc.Control(func(fd uintptr) {
		on, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		if serr == nil && on != 0 {
			intvl, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		}
	}))
	require.NoError(t, serr)
	return on != 0, time.Duration(intvl) * time.Second
}

func TestCONNECTDialKeepAlive(t *testing.T) {
	tests := []struct {
		name      string
		keepAlive time.Duration
		on        bool
	}{
		{"off by default: no keep-alive setsockopt on CONNECT", 0, false},
		{"on when configured, idle that long before the first probe", 45 * time.Second, true},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ExternalIP = netip.MustParseAddr("127.0.0.1")
			cfg.TCPKeepAlive = tt.keepAlive
			s, err := New(cfg, Deps{})
			require.NoError(t, err)
			defer s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := s.dialFromExternal(ctx, "tcp", ln.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			on, period := keepAliveOn(t, c)
			assert.Equal(t, tt.on, on)
			if tt.on {
				assert.Equal(t, tt.keepAlive, period)
			}
		})
	}
}

func TestKeepAlivePeriod(t *testing.T) {
	assert.Equal(t, time.Duration(-1), KeepAlivePeriod(0), "0 is off, not Go's 15 s default")
	assert.Equal(t, time.Duration(-1), KeepAlivePeriod(-time.Second))
	assert.Equal(t, time.Minute, KeepAlivePeriod(time.Minute))
	cfg := DefaultConfig()
	cfg.TCPKeepAlive = -time.Second
	assert.ErrorContains(t, cfg.Validate(), "keep-alive")
}
