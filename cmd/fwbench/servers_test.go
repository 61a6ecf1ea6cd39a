package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
