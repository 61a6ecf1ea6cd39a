package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBuildOnceAndRemove: a command is built once however often it is
// asked for, runs, reports whether it has the race detector as the tests
// do, and is gone after RemoveAll.
func TestBuildOnceAndRemove(t *testing.T) {
	src := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "main.go"), []byte(`package main

import (
	"fmt"
	"runtime/debug"
)

func main() {
	info, _ := debug.ReadBuildInfo()
	for _, s := range info.Settings {
		if s.Key == "-race" {
			fmt.Print(s.Value)
			return
		}
	}
	fmt.Print("false")
}
`), 0o644))
	// go build wants a module for a directory: give the program one.
	require.NoError(t, os.WriteFile(filepath.Join(src, "go.mod"), []byte("module probe\n\ngo 1.22\n"), 0o644))

	first := Build(t, src)
	again := Build(t, src)
	assert.Equal(t, first, again, "built once")
	out, err := exec.Command(first).Output()
	require.NoError(t, err)
	want := "false"
	if race {
		want = "true"
	}
	assert.Equal(t, want, string(out), "built with -race exactly when the tests are")

	RemoveAll()
	_, err = os.Stat(first)
	assert.ErrorIs(t, err, os.ErrNotExist)
}
