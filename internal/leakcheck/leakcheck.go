// Package leakcheck finds goroutines a test left behind. It is for tests
// only: it reads every goroutine's stack, which is slow and stops the
// world.
package leakcheck

import (
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// Filter says which goroutines count.
type Filter struct {
	// Frames: a goroutine counts when its stack names one of these, for
	// example "fwproxy/proxy.(*" (any method of the package's types) or
	// "fwproxy/leases.(*lease)".
	Frames []string
	// SkipTests: a goroutine whose stack (its creator included) is in a
	// _test.go file does not count: the test's own helpers and servers.
	SkipTests bool
}

func (f Filter) matches(stack string) bool {
	if f.SkipTests && strings.Contains(stack, "_test.go") {
		return false
	}
	for _, fr := range f.Frames {
		if strings.Contains(stack, fr) {
			return true
		}
	}
	return false
}

// stacks returns every goroutine's stack, one string each.
func stacks() []string {
	var sb strings.Builder
	pprof.Lookup("goroutine").WriteTo(&sb, 2)
	return strings.Split(sb.String(), "\n\n")
}

// Find returns the stacks of the goroutines f counts.
func Find(f Filter) []string {
	var out []string
	for _, g := range stacks() {
		if f.matches(g) {
			out = append(out, g)
		}
	}
	return out
}

// Count is how many goroutines have fn (a function name, called) on their
// stack.
func Count(fn string) int {
	n := 0
	for _, g := range stacks() {
		if strings.Contains(g, fn+"(") {
			n++
		}
	}
	return n
}

// poll is how often Require looks again. Nothing announces that a
// goroutine has left its last frame, so this is polled, not waited for.
const poll = time.Millisecond

// Require fails t, showing the first stack, when goroutines that f counts
// are still alive after timeout. A goroutine that has just signalled its
// end may still be on its way out, hence the wait.
func Require(t testing.TB, timeout time.Duration, f Filter) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := Find(f)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutine(s) left behind; the first:\n%s", len(left), left[0])
			return
		}
		time.Sleep(poll)
	}
}
