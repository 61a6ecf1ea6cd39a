package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// describeMachine says what the figures were measured on.
func describeMachine() []string {
	lines := []string{
		fmt.Sprintf("CPU: %s, %d logical CPUs", cpuModel(), runtime.NumCPU()),
		fmt.Sprintf("kernel: %s, Go %s %s/%s", readTrim("/proc/sys/kernel/osrelease"), runtime.Version(), runtime.GOOS, runtime.GOARCH),
	}
	if mem := memTotal(); mem != "" {
		lines = append(lines, "memory: "+mem)
	}
	if v := dantedVersion(); v != "" {
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

// dantedVersion is the first line of `danted -v`, when danted is there.
func dantedVersion() string {
	path := findDanted("/usr/sbin/danted")
	if path == "" {
		return ""
	}
	out, _ := exec.Command(path, "-v").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
