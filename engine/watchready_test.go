package engine

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// changeLog is the Reloader's Logger in tests: it records the file of every
// "policy table change" record, which Run logs for each relevant fsnotify
// event it handles, so a test knows when the watcher has seen a change
// (and which) without a fixed wait.
type changeLog struct {
	mu    sync.Mutex
	files []string
}

func (h *changeLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *changeLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *changeLog) WithGroup(string) slog.Handler            { return h }

func (h *changeLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "policy table change" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "file" {
			h.mu.Lock()
			h.files = append(h.files, a.Value.String())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

// seen returns the files of the changes the watcher handled so far.
func (h *changeLog) seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.files)
}

// reloadLog records every reload attempt's error (nil for success).
type reloadLog struct {
	mu   sync.Mutex
	errs []error
}

func (r *reloadLog) add(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *reloadLog) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs)
}

// waitAfter waits until a reload attempt beyond the first n has been made
// and returns its error.
func (r *reloadLog) waitAfter(t *testing.T, n int, within time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r.mu.Lock()
		if len(r.errs) > n {
			err := r.errs[n]
			r.mu.Unlock()
			return err
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no reload within %v", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runWatching loads rl's table (rl.Reload), runs rl.Run until stop is
// called (or the test ends) and returns once the watcher is live and idle.
// A change made before its watch is in place would go unnoticed, so rather
// than sleep it rewrites touch (a file of the table, content unchanged)
// until Run logs a change, then waits for the reload that follows. It sets
// rl.Logger and wraps rl.OnReload first (Reload's background work reads
// them); reloads records the attempts from the initial load on.
func runWatching(t *testing.T, rl *Reloader, touch string) (changes *changeLog, reloads *reloadLog, stop func()) {
	t.Helper()
	content, err := os.ReadFile(touch)
	if err != nil {
		t.Fatal(err)
	}
	changes, reloads = &changeLog{}, &reloadLog{}
	rl.Logger = slog.New(changes)
	next := rl.OnReload
	rl.OnReload = func(err error) {
		if next != nil {
			next(err)
		}
		reloads.add(err)
	}
	if err := rl.Reload(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rl.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)

	deadline := time.Now().Add(10 * time.Second)
	for len(changes.seen()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the watcher logged no \"policy table change\" for %s within 10 s", touch)
		}
		writeFile(t, touch, string(content))
		// A change the watcher sees is logged at once; give it a
		// moment before writing again.
		for end := time.Now().Add(100 * time.Millisecond); len(changes.seen()) == 0 && time.Now().Before(end); {
			time.Sleep(2 * time.Millisecond)
		}
	}
	reloads.waitAfter(t, 1, 10*time.Second)
	return changes, reloads, stop
}

// tableFile returns a file of the table at path to touch: path itself, or
// for a directory its first *.yaml or *.yml file.
func tableFile(t *testing.T, path string) string {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsDir() {
		return path
	}
	m, _ := filepath.Glob(filepath.Join(path, "*.y*ml"))
	if len(m) == 0 {
		t.Fatalf("no table file in %s", path)
	}
	return m[0]
}
