package probe

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// saveLogBuffer is a log destination safe for the cache's goroutines.
type saveLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *saveLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *saveLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestCacheSaveFailure: when the cache file cannot be written (here its
// directory is gone), Save reports it, the file written before stays as it
// was, nothing is left behind, and Run logs the error and keeps the
// changes: once the directory is back, its next periodic save writes them.
func TestCacheSaveFailure(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "probes.json")
	var logs saveLogBuffer
	now := time.Now().UTC().Truncate(time.Second)
	c := NewCache(CacheConfig{SaveEvery: 20 * time.Millisecond, ScanEvery: time.Hour,
		Probe:  func(context.Context, string) (*Result, error) { return nil, context.Canceled },
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c.Load(path)
	c.Put(synthetic("a.example", now, true))
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// The directory disappears (moved away): saving fails.
	moved := filepath.Join(root, "moved")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	c.Put(synthetic("b.example", now, true))
	if err := c.Save(); err == nil {
		t.Fatal("Save into a missing directory succeeded")
	}
	if b, err := os.ReadFile(filepath.Join(moved, "probes.json")); err != nil || !bytes.Equal(b, saved) {
		t.Errorf("the file saved before changed (%v)", err)
	}
	if entries, _ := os.ReadDir(moved); len(entries) != 1 {
		t.Errorf("%d files next to the cache file, want it alone", len(entries))
	}

	// Run's periodic save fails and says so, and keeps the change.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	waitFor(t, "Run to log the failed save", func() bool {
		return strings.Contains(logs.String(), `msg="saving probe cache"`)
	})
	// The directory is back: the next periodic save writes both results.
	if err := os.Rename(moved, dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the periodic save to write b.example", func() bool {
		b, err := os.ReadFile(path)
		return err == nil && bytes.Contains(b, []byte(`"b.example"`)) && bytes.Contains(b, []byte(`"a.example"`))
	})
	d := NewCache(CacheConfig{Logger: slog.New(slog.DiscardHandler)})
	d.Load(path)
	if d.Len() != 2 {
		t.Errorf("reloaded %d results, want 2", d.Len())
	}
}
