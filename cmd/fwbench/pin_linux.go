package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// cpuSplit divides the CPUs the driver may use between the servers of the
// streaming scenario and the driver (the sender, the players and the MMS
// stub). Without it the driver and the proxy share every core, and on a
// small machine the largest N measures whichever runs out first; with it,
// each server has a core of its own, so its largest N is what one core
// carries and the driver's own limit shows in the direct row.
type cpuSplit struct {
	all, server, driver unix.CPUSet
}

// maxCPU bounds the CPU numbers a unix.CPUSet holds.
const maxCPU = 1024

// splitCPUs gives the servers the highest CPU the driver may run on and
// the driver the rest. It fails on a machine with one CPU.
func splitCPUs() (cpuSplit, error) {
	var s cpuSplit
	if err := unix.SchedGetaffinity(0, &s.all); err != nil {
		return s, fmt.Errorf("sched_getaffinity: %w", err)
	}
	if s.all.Count() < 2 {
		return s, errors.New("one CPU: nothing to split")
	}
	s.driver = s.all
	for cpu := maxCPU - 1; cpu >= 0; cpu-- {
		if s.all.IsSet(cpu) {
			s.server.Set(cpu)
			s.driver.Clear(cpu)
			break
		}
	}
	return s, nil
}

// cpuList names the CPUs of set as the kernel's Cpus_allowed_list does
// ("0-3,6").
func cpuList(set unix.CPUSet) string {
	var out []byte
	for cpu := 0; cpu < maxCPU; cpu++ {
		if !set.IsSet(cpu) {
			continue
		}
		last := cpu
		for last+1 < maxCPU && set.IsSet(last+1) {
			last++
		}
		if len(out) > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendInt(out, int64(cpu), 10)
		if last > cpu {
			out = append(out, '-')
			out = strconv.AppendInt(out, int64(last), 10)
		}
		cpu = last
	}
	return string(out)
}

// pinThreads sets the affinity of every thread of process pid. Threads
// created afterwards inherit it from the thread that creates them, so a
// thread that starts while the list is read is the only one missed; the
// callers pin again before each step.
func pinThreads(pid int, set *unix.CPUSet) error {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*", pid))
	if err != nil {
		return err
	}
	pinned := 0
	for _, t := range tasks {
		tid, err := strconv.Atoi(filepath.Base(t))
		if err != nil {
			continue
		}
		switch err := unix.SchedSetaffinity(tid, set); {
		case err == nil:
			pinned++
		case errors.Is(err, unix.ESRCH): // exited meanwhile
		default:
			return fmt.Errorf("sched_setaffinity %d: %w", tid, err)
		}
	}
	if pinned == 0 {
		return fmt.Errorf("process %d: no thread to pin", pid)
	}
	return nil
}

// pinGroup sets the affinity of every thread of every process of group
// pgid (danted's workers fork from a pinned process and inherit it too).
func pinGroup(pgid int, set *unix.CPUSet) error {
	pids, err := groupMembers(pgid)
	if err != nil {
		return err
	}
	var errs []error
	for _, pid := range pids {
		if err := pinThreads(pid, set); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pin puts the servers of process groups pgids on the server CPU and the
// driver on the others. Called again before each step, it catches the
// threads and processes started since.
func (s *cpuSplit) pin(pgids []int) error {
	for _, pgid := range pgids {
		if err := pinGroup(pgid, &s.server); err != nil {
			return fmt.Errorf("pinning group %d: %w", pgid, err)
		}
	}
	if err := pinThreads(os.Getpid(), &s.driver); err != nil {
		return fmt.Errorf("pinning the driver: %w", err)
	}
	return nil
}

// unpin gives the servers and the driver every CPU again (danted goes on
// to other scenarios).
func (s *cpuSplit) unpin(pgids []int) error {
	var errs []error
	for _, pgid := range pgids {
		errs = append(errs, pinGroup(pgid, &s.all))
	}
	errs = append(errs, pinThreads(os.Getpid(), &s.all))
	return errors.Join(errs...)
}

// String says where each side runs, for the report.
func (s *cpuSplit) String() string {
	return fmt.Sprintf("each server on CPU %s, the driver on CPU %s", cpuList(s.server), cpuList(s.driver))
}
