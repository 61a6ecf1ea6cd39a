//go:build pprof

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
)

// startProfile, in a binary built with -tags pprof, writes a CPU profile of
// the process's whole life to $FWPROXY_PROFILE_DIR/cpu-<pid>.pprof and, at
// exit, its allocation and heap profiles beside it (BENCHMARKS.md,
// Profiles). fwbench starts and stops its proxies itself, so an environment
// variable, not a listener, is how a profile of a benchmark run is taken.
// Without the variable it does nothing.
func startProfile() (stop func()) {
	dir := os.Getenv("FWPROXY_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	name := func(kind string) string { return filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", kind, os.Getpid())) }
	cpu, err := os.Create(name("cpu"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fwproxy: cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		fmt.Fprintln(os.Stderr, "fwproxy: cpu profile:", err)
		cpu.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		cpu.Close()
		runtime.GC()
		for _, kind := range []string{"allocs", "heap", "goroutine"} {
			f, err := os.Create(name(kind))
			if err != nil {
				fmt.Fprintln(os.Stderr, "fwproxy:", kind, "profile:", err)
				continue
			}
			pprof.Lookup(kind).WriteTo(f, 0)
			f.Close()
		}
	}
}
