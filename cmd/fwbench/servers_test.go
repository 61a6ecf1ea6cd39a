package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/testbin"
)

func TestDantedConfig(t *testing.T) {
	c := dantedConfig("10800", "/tmp/x/danted.log")
	for _, want := range []string{
		"logoutput: /tmp/x/danted.log\n",
		"internal: 127.0.0.1 port = 10800\n",
		"external: 127.0.0.1\n",
		"socksmethod: none\n",
		"command: connect udpassociate bindreply udpreply\n",
	} {
		assert.Contains(t, c, want)
	}
	// Loopback only: every address in it is in 127.0.0.0/8, apart from the
	// "to: 0.0.0.0/0" destinations.
	for _, f := range strings.Fields(c) {
		if strings.Count(f, ".") == 3 && f != "0.0.0.0/0" {
			assert.True(t, strings.HasPrefix(f, "127."), "address %q", f)
		}
	}
	assert.Equal(t, strings.Count(c, "{"), strings.Count(c, "}"))
}

func TestFwproxyLeaseConfig(t *testing.T) {
	assert.Equal(t, "leases:\n  max_leases: 10000\n  max_leases_per_client: 10000\n", fwproxyLeaseConfig(10000))
}

func TestFindDanted(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "danted")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, nil, 0o644))
	assert.Equal(t, exe, findDanted(exe))
	assert.Empty(t, findDanted(plain), "not executable")
	assert.Empty(t, findDanted(filepath.Join(dir, "missing")))
	assert.Empty(t, findDanted(dir), "a directory")
	assert.Empty(t, findDanted(""))
}

func TestParseVmRSS(t *testing.T) {
	n, err := parseVmRSS([]byte("Name:\tfwproxy\nVmHWM:\t   9000 kB\nVmRSS:\t   8123 kB\nThreads: 7\n"))
	require.NoError(t, err)
	assert.Equal(t, 8123, n)
	_, err = parseVmRSS([]byte("Name:\tx\n"))
	assert.Error(t, err)
}

func TestTailBufferKeepsTheEnd(t *testing.T) {
	b := &tailBuffer{max: 4}
	b.Write([]byte("abc"))
	b.Write([]byte("defg"))
	assert.Equal(t, "defg", b.String())
}

// TestConnectMinSystems starts the built connect-min in both modes as the
// run does and carries one CONNECT through each, with its CPU readable.
func TestMain(m *testing.M) {
	code := m.Run()
	testbin.RemoveAll()
	os.Exit(code)
}

func TestConnectMinSystems(t *testing.T) {
	bin := testbin.Build(t, "../connect-min")
	pe, err := startPeers()
	require.NoError(t, err)
	t.Cleanup(pe.Close)
	for _, tt := range []struct {
		sys  system
		mode string
	}{{sysConnectMin, "netpoll"}, {sysConnectMinThreads, "threads"}} {
		t.Run(tt.mode, func(t *testing.T) {
			p, err := startConnectMin(t.Context(), bin, tt.mode)
			require.NoError(t, err)
			t.Cleanup(p.stop)
			tg := target{sys: tt.sys, proxy: p.addr, tcpOnly: true, server: p}
			ctx, cancel := context.WithTimeout(t.Context(), connectTimeout)
			defer cancel()
			c, err := tg.dialTCP(ctx, pe.helloAddr())
			require.NoError(t, err)
			defer c.Close()
			c.SetDeadline(time.Now().Add(connectTimeout))
			got, err := io.ReadAll(c)
			require.NoError(t, err, "the target's byte, then its close")
			assert.Equal(t, "h", string(got))
			_, ok := tg.serverCPU()
			assert.True(t, ok, "its CPU is read from /proc")
		})
	}
	assert.Equal(t, "minimal CONNECT (netpoll)", sysConnectMin.String())
	assert.Equal(t, "minimal CONNECT (threads)", sysConnectMinThreads.String())
}
