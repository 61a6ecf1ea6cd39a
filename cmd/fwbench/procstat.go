package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The CPU and memory of a measured server, read from /proc: every process
// of its process group (danted forks workers; fwproxy and the relay are
// one process each) and every thread of each.

// userHZ is the unit of the times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// procStat is what fwbench uses of a /proc/PID/stat line.
type procStat struct {
	pgrp         int
	utime, stime uint64 // clock ticks, all threads, living and exited
	// cutime and cstime are the clock ticks of the children the process
	// has waited for: a danted worker that exits while fwbench measures
	// leaves the group, and its CPU is found here, in its parent's line.
	cutime, cstime uint64
}

// parseStat parses a /proc/PID/stat line. The command name (field 2) is in
// parentheses and may itself hold spaces and parentheses, so the fields
// are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return procStat{}, errors.New("stat: no command name")
	}
	f := bytes.Fields(b[end+1:])
	// After the name: state(3) ppid(4) pgrp(5) … utime(14) stime(15)
	// cutime(16) cstime(17).
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("stat: %d fields after the name", len(f))
	}
	var s procStat
	var err error
	if s.pgrp, err = strconv.Atoi(string(f[2])); err != nil {
		return procStat{}, fmt.Errorf("stat pgrp: %w", err)
	}
	if s.utime, err = strconv.ParseUint(string(f[11]), 10, 64); err != nil {
		return procStat{}, fmt.Errorf("stat utime: %w", err)
	}
	if s.stime, err = strconv.ParseUint(string(f[12]), 10, 64); err != nil {
		return procStat{}, fmt.Errorf("stat stime: %w", err)
	}
	// Signed in the kernel's format; never negative in practice.
	cu, err := strconv.ParseInt(string(f[13]), 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stat cutime: %w", err)
	}
	cs, err := strconv.ParseInt(string(f[14]), 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stat cstime: %w", err)
	}
	s.cutime, s.cstime = uint64(max(cu, 0)), uint64(max(cs, 0))
	return s, nil
}

func (s procStat) cpu() time.Duration {
	return time.Duration(s.utime+s.stime) * time.Second / userHZ
}

// reaped is the CPU time of the children the process has waited for.
func (s procStat) reaped() time.Duration {
	return time.Duration(s.cutime+s.cstime) * time.Second / userHZ
}

// parseSchedstat returns the first field of /proc/PID/task/TID/schedstat:
// the nanoseconds the thread has run.
func parseSchedstat(b []byte) (time.Duration, error) {
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0, errors.New("schedstat: empty")
	}
	ns, err := strconv.ParseUint(string(f[0]), 10, 63)
	if err != nil {
		return 0, fmt.Errorf("schedstat: %w", err)
	}
	return time.Duration(ns), nil
}

// groupMembers lists the processes of process group pgid.
func groupMembers(pgid int) ([]int, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, path := range dirs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // exited meanwhile
		}
		if s, err := parseStat(b); err == nil && s.pgrp == pgid {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no process in group %d", pgid)
	}
	return pids, nil
}

// groupCPU is the CPU time the processes of group pgid have used: the sum
// of their threads' run times in nanoseconds (schedstat), or, where that
// is not readable, the process's clock ticks (10 ms steps), plus the clock
// ticks of the children they have waited for.
func groupCPU(pgid int) (time.Duration, error) {
	return sumGroup(pgid, func(pid int, s procStat) time.Duration {
		if d, err := threadsCPU(pid); err == nil {
			return d
		}
		return s.cpu()
	})
}

// groupCPUTicks is the CPU time of the processes of group pgid from their
// /proc/PID/stat, in 10 ms clock ticks: coarser than groupCPU, but it
// includes threads that have exited, which a server with a thread per
// connection (microsocks) is made of.
func groupCPUTicks(pgid int) (time.Duration, error) {
	return sumGroup(pgid, func(_ int, s procStat) time.Duration { return s.cpu() })
}

// sumGroup adds own(pid, stat) and the reaped children's CPU over the
// members of group pgid. A member that exits between two readings leaves
// the group; its parent, when in the group, holds its CPU from then on.
func sumGroup(pgid int, own func(pid int, s procStat) time.Duration) (time.Duration, error) {
	pids, err := groupMembers(pgid)
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // exited meanwhile
		}
		s, err := parseStat(b)
		if err != nil {
			return 0, err
		}
		total += own(pid, s) + s.reaped()
	}
	return total, nil
}

// threadsCPU sums the schedstat run time of pid's threads.
func threadsCPU(pid int) (time.Duration, error) {
	paths, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*/schedstat", pid))
	if err != nil || len(paths) == 0 {
		return 0, fmt.Errorf("no schedstat for %d", pid)
	}
	var total time.Duration
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, err
		}
		d, err := parseSchedstat(b)
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

// groupRSSKiB sums VmRSS over the group (pages shared between danted's
// processes count once per process).
func groupRSSKiB(pgid int) (int, error) {
	pids, err := groupMembers(pgid)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		n, err := parseVmRSS(b)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}
