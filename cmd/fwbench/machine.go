package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// describeMachine says what the figures were measured on; danted is the
// binary measured, "" when none was.
func describeMachine(danted string) []string {
	lines := []string{
		fmt.Sprintf("CPU: %s, %d logical CPUs", cpuModel(), runtime.NumCPU()),
		fmt.Sprintf("kernel: %s, Go %s %s/%s", readTrim("/proc/sys/kernel/osrelease"), runtime.Version(), runtime.GOOS, runtime.GOARCH),
	}
	if mem := memTotal(); mem != "" {
		lines = append(lines, "memory: "+mem)
	}
	if v := dantedVersion(danted); v != "" {
		lines = append(lines, "danted: "+v)
	}
	return lines
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// firstField returns the value of the first "key : value" line for key.
func firstField(text []byte, key string) string {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	if m := firstField(b, "model name"); m != "" {
		return m
	}
	return "unknown CPU"
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	return firstField(b, "MemTotal")
}

// dantedVersion is the first line of `danted -v`; "" without a binary.
func dantedVersion(path string) string {
	if path == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, path, "-v").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
