// Package testbin builds the project's commands for tests that run them as
// processes: each once per test binary, with the race detector when the
// tests run with it (so a race in the child is caught too), into one
// temporary directory that RemoveAll deletes after the tests.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	dir   string
	built = map[string]build{}
)

type build struct {
	path string
	err  error
}

// Build returns the path of the command in pkgDir (a path relative to the
// test's package directory, "." for the package itself), building it the
// first time it is asked for. A failed build fails t, every time.
func Build(t testing.TB, pkgDir string) string {
	t.Helper()
	abs, err := filepath.Abs(pkgDir)
	if err != nil {
		t.Fatalf("testbin: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	b, ok := built[abs]
	if !ok {
		b = compile(abs)
		built[abs] = b
	}
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// compile builds the command in the directory abs; go runs there, so
// that a directory of another module builds too.
func compile(abs string) build {
	if dir == "" {
		d, err := os.MkdirTemp("", "fwproxy-testbin-")
		if err != nil {
			return build{err: fmt.Errorf("testbin: %w", err)}
		}
		dir = d
	}
	// Named after the package's directory, numbered apart from any other
	// built command of the same name.
	path := filepath.Join(dir, fmt.Sprintf("%s-%d", filepath.Base(abs), len(built)))
	args := []string{"build", "-o", path}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = abs
	if out, err := cmd.CombinedOutput(); err != nil {
		return build{err: fmt.Errorf("go build %s: %v\n%s", abs, err, out)}
	}
	return build{path: path}
}

// RemoveAll deletes what Build built; TestMain calls it after m.Run.
func RemoveAll() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
	}
	dir, built = "", map[string]build{}
}
