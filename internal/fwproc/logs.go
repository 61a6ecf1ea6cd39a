package fwproc

import (
	"strings"
	"sync"
)

// DefaultMaxLogLines is how many lines Logs keeps unless told otherwise:
// far more than a test or a demo writes, but a bound against a process
// that logs in a loop.
const DefaultMaxLogLines = 1 << 20

// Logs keeps the lines a process wrote, the oldest dropped beyond a
// bound. Safe for concurrent use.
type Logs struct {
	mu      sync.Mutex
	max     int
	lines   []string
	dropped int
}

// NewLogs keeps up to max lines (DefaultMaxLogLines when max <= 0).
func NewLogs(max int) *Logs {
	if max <= 0 {
		max = DefaultMaxLogLines
	}
	return &Logs{max: max}
}

// Add appends one line.
func (l *Logs) Add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max <= 0 {
		l.max = DefaultMaxLogLines
	}
	if len(l.lines) == l.max {
		// Halve rather than shift one at a time: amortised O(1) per line.
		n := copy(l.lines, l.lines[l.max/2:])
		clear(l.lines[n:])
		l.dropped += len(l.lines) - n
		l.lines = l.lines[:n]
	}
	l.lines = append(l.lines, line)
}

// Write adds what a process writes, line by line, so that Logs can be a
// command's Stdout or Stderr.
func (l *Logs) Write(p []byte) (int, error) {
	for line := range strings.SplitSeq(strings.TrimRight(string(p), "\n"), "\n") {
		l.Add(line)
	}
	return len(p), nil
}

// Lines returns a copy of the lines kept.
func (l *Logs) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// Dropped counts the lines dropped to stay within the bound.
func (l *Logs) Dropped() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// Contains reports whether one line contains every one of parts.
func (l *Logs) Contains(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, line := range l.lines {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		return true
	}
	return false
}

// Count is how many times s occurs in the lines kept.
func (l *Logs) Count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		n += strings.Count(line, s)
	}
	return n
}
