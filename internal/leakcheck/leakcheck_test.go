package leakcheck_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"fwproxy/internal/leakcheck"
)

// parked blocks until stop is closed; a named function, so that its frame
// can be found.
func parked(stop <-chan struct{}, started chan<- struct{}) {
	close(started)
	<-stop
}

// recorder is a testing.TB that keeps Fatalf instead of ending the test.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(string, ...any) {
	r.failed = true
}

func TestFindsAndClears(t *testing.T) {
	f := leakcheck.Filter{Frames: []string{"leakcheck_test.parked"}}
	stop, started := make(chan struct{}), make(chan struct{})
	go parked(stop, started)
	<-started

	assert.Len(t, leakcheck.Find(f), 1)
	assert.Equal(t, 1, leakcheck.Count("fwproxy/internal/leakcheck_test.parked"))
	assert.Empty(t, leakcheck.Find(leakcheck.Filter{Frames: f.Frames, SkipTests: true}), "created by a test: skipped")

	r := &recorder{TB: t}
	leakcheck.Require(r, 10*time.Millisecond, f)
	assert.True(t, r.failed, "a live goroutine fails the check")

	close(stop)
	r = &recorder{TB: t}
	leakcheck.Require(r, 30*time.Second, f)
	assert.False(t, r.failed, "the ended goroutine does not")
}
