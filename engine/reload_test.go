package engine

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceByRename writes content to a temporary file in the same directory
// and renames it over path, as git checkout and most editors do.
func replaceByRename(t testing.TB, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func lookup(t testing.TB, e *Engine, key string) string {
	t.Helper()
	r, err := e.Lookup(context.Background(), "tls_policy", key)
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(r.Status.String() + " " + r.Data)
}

// waitFor polls until lookup(key) == want or the deadline passes.
func waitFor(t *testing.T, e *Engine, key, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := lookup(t, e, key)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookup(%s) = %q after %v, want %q", key, got, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReloaderFollowsEdits(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "partners.yaml")
	writeFile(t, path, "outbound:\n  bank.example: encrypt\n")
	e := New(nil, nil, nil, nil)
	var failures atomic.Int32
	rl := &Reloader{Path: dir, Engine: e, Debounce: 50 * time.Millisecond,
		OnReload: func(err error) {
			if err != nil {
				failures.Add(1)
			}
		}}
	changes, _, stop := runWatching(t, rl, path)

	if got := lookup(t, e, "bank.example"); got != "OK encrypt" {
		t.Fatalf("initial = %q", got)
	}
	// In place (truncate and write).
	writeFile(t, path, "outbound:\n  bank.example: verify\n")
	waitFor(t, e, "bank.example", "OK verify", 2*time.Second)

	// By rename, as git checkout does.
	replaceByRename(t, path, "outbound:\n  bank.example: secure\n")
	waitFor(t, e, "bank.example", "OK secure", 2*time.Second)

	// A new file in the directory is picked up.
	writeFile(t, filepath.Join(dir, "more.yml"), "outbound:\n  new.example: encrypt\n")
	waitFor(t, e, "new.example", "OK encrypt", 2*time.Second)

	// A broken edit changes nothing and is counted.
	before := failures.Load()
	replaceByRename(t, path, "outbound:\n  bank.example: bogus-level\n")
	deadline := time.Now().Add(2 * time.Second)
	for failures.Load() == before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if failures.Load() == before {
		t.Fatal("broken edit did not trigger a (failed) reload")
	}
	if got := lookup(t, e, "bank.example"); got != "OK secure" {
		t.Fatalf("after broken edit = %q, want the old answer", got)
	}
	// Fixing it is picked up again.
	replaceByRename(t, path, "outbound:\n  bank.example: encrypt\n")
	waitFor(t, e, "bank.example", "OK encrypt", 2*time.Second)

	// Editor swap files and other names are ignored. The watcher handles
	// events in order, so once the edit made after them is loaded, it has
	// seen them: none may count as a change of the table.
	seen := len(changes.seen())
	writeFile(t, filepath.Join(dir, ".partners.yaml.swp"), "garbage: [")
	writeFile(t, filepath.Join(dir, "README"), "garbage: [")
	replaceByRename(t, path, "outbound:\n  bank.example: verify\n")
	waitFor(t, e, "bank.example", "OK verify", 2*time.Second)
	for _, f := range changes.seen()[seen:] {
		if b := filepath.Base(f); b == ".partners.yaml.swp" || b == "README" {
			t.Errorf("%s was taken for a change of the table", f)
		}
	}
	stop()
}

func TestReloaderWatchesIncludeDirectory(t *testing.T) {
	dir := t.TempDir()
	tableDir := filepath.Join(dir, "table")
	incDir := filepath.Join(dir, "postfix")
	for _, d := range []string{tableDir, incDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(incDir, "tls_policy"), "legacy.example encrypt\n")
	writeFile(t, filepath.Join(tableDir, "t.yaml"), "include:\n  - postfix: ../postfix/tls_policy\n")
	e := startReloader(t, tableDir)
	waitFor(t, e, "legacy.example", "OK encrypt", time.Second)
	replaceByRename(t, filepath.Join(incDir, "tls_policy"), "legacy.example verify\n")
	waitFor(t, e, "legacy.example", "OK verify", 2*time.Second)
}

// startReloader loads dir and runs its watcher until the test ends.
func startReloader(t *testing.T, dir string) *Engine {
	t.Helper()
	e, _ := startReloaderLog(t, dir)
	return e
}

// startReloaderLog is startReloader that also returns the reload attempts
// made after the watcher became ready.
func startReloaderLog(t *testing.T, dir string) (*Engine, *reloadLog) {
	t.Helper()
	e := New(nil, nil, nil, nil)
	rl := &Reloader{Path: dir, Engine: e, Debounce: 50 * time.Millisecond}
	_, reloads, _ := runWatching(t, rl, tableFile(t, dir))
	return e, reloads
}

// An include added by an edit that fails because the included file does
// not exist yet: creating the file must reload the table (its directory
// is watched from the failed load on), without SIGHUP.
func TestReloaderWatchesIncludeOfFailedLoad(t *testing.T) {
	for _, tc := range []struct{ name, incDir, incPath string }{
		{"include in the table directory", "", "tls_policy"},
		{"include in a directory of its own", "postfix", "../postfix/tls_policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tableDir := filepath.Join(dir, "table")
			incDir := tableDir
			if tc.incDir != "" {
				incDir = filepath.Join(dir, tc.incDir)
			}
			for _, d := range []string{tableDir, incDir} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(tableDir, "t.yaml")
			writeFile(t, path, "outbound:\n  bank.example: encrypt\n")
			e, reloads := startReloaderLog(t, tableDir)
			n := reloads.count()
			replaceByRename(t, path, "outbound:\n  bank.example: encrypt\ninclude:\n  - postfix: "+tc.incPath+"\n")
			if err := reloads.waitAfter(t, n, 2*time.Second); err == nil {
				t.Fatal("the table naming a missing include loaded")
			}
			if got := lookup(t, e, "partner.example"); got != "NOTFOUND" {
				t.Fatalf("before the include exists: %q", got)
			}
			writeFile(t, filepath.Join(incDir, "tls_policy"), "partner.example verify\n")
			waitFor(t, e, "partner.example", "OK verify", 2*time.Second)
			waitFor(t, e, "bank.example", "OK encrypt", time.Second)
		})
	}
}

// A deployment that replaces the whole table directory by rename (mv a
// new checkout over it, or flips a symlink) must be followed: the new
// table loads, and later edits in the new directory reload it.
func TestReloaderFollowsReplacedDirectory(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replace func(t *testing.T, table, next string)
	}{
		{"directory renamed over", func(t *testing.T, table, next string) {
			if err := os.Rename(table, table+".old"); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(next, table); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink flipped", func(t *testing.T, table, next string) {
			tmp := table + ".new-link"
			if err := os.Symlink(next, tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, table); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			first := filepath.Join(dir, "release-1")
			next := filepath.Join(dir, "release-2")
			table := filepath.Join(dir, "table")
			for _, d := range []string{first, next} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			writeFile(t, filepath.Join(first, "t.yaml"), "outbound:\n  bank.example: encrypt\n")
			writeFile(t, filepath.Join(next, "t.yaml"), "outbound:\n  bank.example: verify\n")
			if tc.name == "symlink flipped" {
				if err := os.Symlink(first, table); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Rename(first, table); err != nil {
				t.Fatal(err)
			}
			e := startReloader(t, table)
			waitFor(t, e, "bank.example", "OK encrypt", time.Second)
			tc.replace(t, table, next)
			waitFor(t, e, "bank.example", "OK verify", 2*time.Second)
			replaceByRename(t, filepath.Join(table, "t.yaml"), "outbound:\n  bank.example: secure\n")
			waitFor(t, e, "bank.example", "OK secure", 2*time.Second)
		})
	}
}

// TestReloadNeverMixesTables swaps between two complete tables while many
// goroutines look up keys: every answer must come from one table or the
// other (never NOTFOUND, never an error), and all keys resolved against one
// snapshot must come from the same table. Run with -race.
func TestReloadNeverMixesTables(t *testing.T) {
	const n = 500
	gen := func(level string) string {
		var b strings.Builder
		b.WriteString("outbound:\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "  d%d.example: %s\n", i, level)
		}
		b.WriteString("  .parent.example: " + level + "\n")
		return b.String()
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "t.yaml")
	writeFile(t, path, gen("encrypt"))
	e := New(nil, nil, nil, nil)
	rl := &Reloader{Path: path, Engine: e}
	if err := rl.Reload(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var lookups atomic.Int64
	errs := make(chan string, 16)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("d%d.example", i%n)
				if i%3 == 0 {
					key = fmt.Sprintf("x%d.sub.parent.example", i)
				}
				r, err := e.Lookup(context.Background(), "tls_policy", key)
				lookups.Add(1)
				if err != nil || r.Status != socketmap.StatusOK || (r.Data != "encrypt" && r.Data != "verify") {
					select {
					case errs <- fmt.Sprintf("%s: %v %+v", key, err, r):
					default:
					}
					return
				}
				// One snapshot answers every key from the same table.
				s := e.Store()
				a, _ := s.Resolve("tls_policy", "d0.example", nil)
				b, _ := s.Resolve("tls_policy", fmt.Sprintf("d%d.example", n-1), nil)
				if a.Data != b.Data {
					select {
					case errs <- fmt.Sprintf("mixed snapshot: %q vs %q", a.Data, b.Data):
					default:
					}
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		level := "verify"
		if i%2 == 1 {
			level = "encrypt"
		}
		writeFile(t, path, gen(level))
		if err := rl.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if lookups.Load() == 0 {
		t.Fatal("no lookups ran")
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestReloadReturnsMemory: after a load, if the heap is above
// releaseAbove, its garbage (the YAML nodes, the previous table) is
// returned to the operating system rather than kept by the Go runtime
// until the heap doubles — a daemon with a 1,000,000-entry table otherwise
// stays at twice its resident size. A smaller heap is kept for the next
// load, which would otherwise fault it back in.
func TestReloadReturnsMemory(t *testing.T) {
	var b strings.Builder
	b.WriteString("outbound:\n")
	for i := range 50_000 {
		fmt.Fprintf(&b, "  \"s%d.example\": \"encrypt protocols=>=TLSv1.2\"\n", i)
	}
	path := filepath.Join(t.TempDir(), "t.yaml")
	writeFile(t, path, b.String())
	for _, tt := range []struct {
		name         string
		releaseAbove uint64
		want         string
	}{
		{"small heap kept", 0, "kept for the next load"},
		{"returned", 1, "returned to the OS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			e := New(nil, nil, nil, nil)
			rl := &Reloader{Path: path, Engine: e, releaseAbove: tt.releaseAbove,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			for range 2 { // the second reload also frees the first table
				if err := rl.Reload(); err != nil {
					t.Fatal(err)
				}
				rl.relWG.Wait()
				if tt.releaseAbove == 0 {
					continue
				}
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				// Heap memory the process holds: in use, or free but not returned.
				held := ms.HeapInuse + ms.HeapIdle - ms.HeapReleased
				runtime.GC()
				runtime.ReadMemStats(&ms)
				live := ms.HeapAlloc
				t.Logf("heap held %d MB, live %d MB", held>>20, live>>20)
				if held > live+8<<20 {
					t.Errorf("after the reload the process holds %d MB of heap for %d MB of live data", held>>20, live>>20)
				}
			}
			if got := lookup(t, e, "s49999.example"); got != "OK encrypt protocols=>=TLSv1.2" {
				t.Errorf("lookup after release = %q", got)
			}
			if n := strings.Count(logs.String(), tt.want); n != 2 {
				t.Errorf("%d log lines %q, want 2:\n%s", n, tt.want, logs.String())
			}
		})
	}
}

// TestReloaderWaitsForQuiet: a burst of changes (a checkout, a file
// written in pieces) swaps in one table, the final one, and only after no
// change has come for Debounce — although loading starts with the first
// change, so that parsing overlaps the wait.
func TestReloaderWaitsForQuiet(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.yaml")
	writeFile(t, path, "outbound:\n  bank.example: encrypt\n")
	e := New(nil, nil, nil, nil)
	var applied atomic.Int32
	rl := &Reloader{Path: dir, Engine: e, Debounce: 800 * time.Millisecond,
		OnReload: func(err error) {
			if err != nil {
				t.Errorf("reload: %v", err)
			}
			applied.Add(1)
		}}
	_, _, stop := runWatching(t, rl, path)
	applied.Store(0)

	// Intermediate states, each a valid table, 50 ms apart.
	for _, level := range []string{"dane", "may", "secure", "dane", "may", "verify"} {
		replaceByRename(t, path, "outbound:\n  bank.example: "+level+"\n")
		if got := lookup(t, e, "bank.example"); got != "OK encrypt" {
			t.Fatalf("during the burst: %q, want the old table", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Quiet since the last change, but not for Debounce yet.
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if got := lookup(t, e, "bank.example"); got != "OK encrypt" {
			t.Fatalf("%q before the quiet period ended, want the old table", got)
		}
	}
	waitFor(t, e, "bank.example", "OK verify", 3*time.Second)
	// One more change, loaded after the burst's: the watcher handles
	// events in order, so by then any second swap for the burst is done.
	replaceByRename(t, path, "outbound:\n  bank.example: secure\n")
	waitFor(t, e, "bank.example", "OK secure", 3*time.Second)
	if n := applied.Load(); n != 2 {
		t.Errorf("%d tables swapped in for one burst and one change, want 2", n)
	}
	stop()
}
