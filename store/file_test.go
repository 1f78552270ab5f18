package store

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loadWithin runs LoadTable(path) and fails t if it has not returned
// within 10 s (a FIFO opened for reading blocks until a writer comes).
func loadWithin(t *testing.T, path string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := LoadTable(path)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("LoadTable(%s) still blocked after 10 s", path)
		return nil
	}
}

// TestLoadRefusesFIFO: a named pipe as the table, in the table directory
// or as an include is refused at once with its place, never opened for a
// blocking read.
func TestLoadRefusesFIFO(t *testing.T) {
	mkfifo := func(t *testing.T, path string) {
		t.Helper()
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("in the directory", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"a.yaml": "outbound:\n  a.example: encrypt\n"})
		mkfifo(t, filepath.Join(dir, "b.yaml"))
		err := loadWithin(t, dir)
		want := filepath.Join(dir, "b.yaml") + ": not a regular file (a named pipe): refused"
		if got := errLines(t, err); len(got) != 1 || got[0] != want {
			t.Errorf("errors %q, want [%q]", got, want)
		}
	})
	t.Run("as the table", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "table.yaml")
		mkfifo(t, path)
		if got := errLines(t, loadWithin(t, path)); len(got) != 1 || !strings.Contains(got[0], "named pipe") {
			t.Errorf("errors %q, want the pipe refused", got)
		}
	})
	t.Run("as an include", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"table.yaml": "outbound:\n  a.example: encrypt\ninclude:\n  - postfix: pipe\n"})
		mkfifo(t, filepath.Join(dir, "pipe"))
		want := filepath.Join(dir, "table.yaml") + ":4: include pipe: not a regular file (a named pipe): refused"
		if got := errLines(t, loadWithin(t, filepath.Join(dir, "table.yaml"))); len(got) != 1 || got[0] != want {
			t.Errorf("errors %q, want [%q]", got, want)
		}
	})
}
