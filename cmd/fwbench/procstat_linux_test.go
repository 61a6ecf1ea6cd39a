package main

import (
	"bufio"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGroupCPUKeepsExitedMembers: a server whose worker burns CPU and exits
// (danted's do) must not lose that CPU from its group's figure: once the
// parent has waited for the worker, it is in the parent's cutime/cstime.
// Only CPU accounting is compared, never how long anything took.
func TestGroupCPUKeepsExitedMembers(t *testing.T) {
	// The worker is a subshell counting to 300,000: well over two clock
	// ticks of CPU; the parent itself only forks, waits and sleeps.
	cmd := exec.Command("sh", "-c", `(i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done); echo reaped; exec sleep 60`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		require.Equal(t, "reaped\n", s)
	case <-time.After(time.Minute):
		t.Fatal("the worker never finished")
	}
	pgid := cmd.Process.Pid
	for _, f := range []struct {
		name string
		fn   func(int) (time.Duration, error)
	}{{"groupCPU", groupCPU}, {"groupCPUTicks", groupCPUTicks}} {
		d, err := f.fn(pgid)
		require.NoError(t, err, f.name)
		assert.GreaterOrEqual(t, d, 20*time.Millisecond, "%s: the exited worker's CPU is counted", f.name)
	}
}
