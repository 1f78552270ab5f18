package tests

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

func itoa(i int) string { return strconv.Itoa(i) }

// writeFile writes content to path (truncating it, as an editor saving in
// place does) and fails t on error.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// replaceFile writes content to a temporary file in path's directory and
// renames it over path, as `git checkout` and many editors do. The
// temporary name has no .yaml suffix, so a directory table never loads it.
func replaceFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("rename %s over %s: %v", tmp, path, err)
	}
}

// startDaemon writes table to DIR/table.yaml and starts the daemon on it.
// With asDir the daemon gets --table DIR (a directory table), else the
// file. It returns the daemon and the file's path.
func startDaemon(t testing.TB, table string, asDir bool) (*harness.Daemon, string) {
	t.Helper()
	bin := daemonBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "table.yaml")
	writeFile(t, path, table)
	arg := path
	if asDir {
		arg = dir
	}
	return harness.StartDaemon(t, bin, arg), path
}

// query runs postmap -q key against map mapName of the daemon.
func query(t testing.TB, conf string, d *harness.Daemon, mapName, key string) harness.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := harness.Postmap(ctx, conf, key, harness.SocketmapSpec(d.Addr, mapName))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// answer is what postmap -q printed for a key: the data, or "" for a miss.
// An error answer fails t: a lookup error is never a plain miss.
func answer(t testing.TB, res harness.Result) string {
	t.Helper()
	if strings.Contains(res.Stderr, "fatal:") || strings.Contains(res.Stderr, "warning:") || res.Code < 0 {
		t.Fatalf("postmap -q failed: %s", res)
	}
	return strings.TrimSuffix(res.Stdout, "\n")
}
