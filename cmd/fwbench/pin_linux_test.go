package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// allowedCPUs reads the Cpus_allowed_list of a /proc/…/status file.
func allowedCPUs(t *testing.T, status string) string {
	t.Helper()
	b, err := os.ReadFile(status)
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s has no Cpus_allowed_list", status)
	return ""
}

// threadCPUs is the allowed-CPU list of every thread of pid.
func threadCPUs(t *testing.T, pid int) map[string]string {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*", pid))
	require.NoError(t, err)
	got := map[string]string{}
	for _, task := range tasks {
		got[task] = allowedCPUs(t, task+"/status")
	}
	return got
}

// TestPinSplitsServersAndDriver: every thread of every process of a
// server's group lands on the server CPU, every thread of the driver on
// the others, and unpin gives both every CPU back.
func TestPinSplitsServersAndDriver(t *testing.T) {
	split, err := splitCPUs()
	if err != nil {
		t.Skipf("no CPU split on this machine: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A group of two processes: the shell and the sleep it forks.
	p, err := startProc(ctx, "group", "/bin/sh", "", "-c", "sleep 60 & wait")
	require.NoError(t, err)
	defer p.stop()
	pgid := p.cmd.Process.Pid
	require.Eventually(t, func() bool {
		pids, err := groupMembers(pgid)
		return err == nil && len(pids) == 2
	}, 10*time.Second, 10*time.Millisecond, "the shell forks its sleep")
	pids, err := groupMembers(pgid)
	require.NoError(t, err)

	every := func(want string, pids ...int) {
		t.Helper()
		for _, pid := range pids {
			for task, cpus := range threadCPUs(t, pid) {
				assert.Equal(t, want, cpus, task)
			}
		}
	}
	require.NoError(t, split.pin([]int{pgid}))
	every(cpuList(split.server), pids...)
	every(cpuList(split.driver), os.Getpid())
	assert.NotEqual(t, cpuList(split.server), cpuList(split.driver))

	require.NoError(t, split.unpin([]int{pgid}))
	every(cpuList(split.all), append(pids, os.Getpid())...)
}

func TestCPUList(t *testing.T) {
	for _, tc := range []struct {
		cpus []int
		want string
	}{
		{nil, ""},
		{[]int{0}, "0"},
		{[]int{0, 1}, "0-1"},
		{[]int{0, 2}, "0,2"},
		{[]int{0, 1, 2, 3, 6, 8, 9}, "0-3,6,8-9"},
		{[]int{maxCPU - 2, maxCPU - 1}, "1022-1023"},
	} {
		var set unix.CPUSet
		for _, c := range tc.cpus {
			set.Set(c)
		}
		assert.Equal(t, tc.want, cpuList(set), "%v", tc.cpus)
	}
}

// TestSplitCPUs: the servers get the highest CPU, the driver all others.
func TestSplitCPUs(t *testing.T) {
	split, err := splitCPUs()
	if err != nil {
		t.Skipf("no CPU split on this machine: %v", err)
	}
	assert.Equal(t, 1, split.server.Count())
	assert.Equal(t, split.all.Count()-1, split.driver.Count())
	for cpu := range maxCPU {
		assert.Equal(t, split.all.IsSet(cpu), split.server.IsSet(cpu) || split.driver.IsSet(cpu), "cpu %d", cpu)
		assert.False(t, split.server.IsSet(cpu) && split.driver.IsSet(cpu), "cpu %d", cpu)
		if split.server.IsSet(cpu) {
			for higher := cpu + 1; higher < maxCPU; higher++ {
				assert.False(t, split.all.IsSet(higher), "cpu %d is above the server's", higher)
			}
		}
	}
}
