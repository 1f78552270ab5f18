package logfollow

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// collector runs a follower and records what it hands over.
type collector struct {
	mu    sync.Mutex
	lines []string
	pos   Position
}

func (c *collector) handle(line string, pos Position) {
	c.mu.Lock()
	c.lines = append(c.lines, line)
	c.pos = pos
	c.mu.Unlock()
}

func (c *collector) snapshot() ([]string, Position) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines), c.pos
}

// waitLines polls until the collector holds n lines (or fails at the deadline).
func (c *collector) waitLines(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := c.snapshot()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d lines, want %d: %q", len(got), n, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// run starts fl in the background and returns the collector and a stop
// function that waits for Run to return.
func run(t *testing.T, fl Follower) (*collector, func()) {
	t.Helper()
	c := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fl.Run(ctx, c.handle) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(func() { cancel() })
	return c, stop
}

func appendLines(t *testing.T, path string, from, to int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := from; i < to; i++ {
		if _, err := fmt.Fprintf(f, "line %d\n", i); err != nil {
			t.Fatal(err)
		}
	}
}

func want(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("line %d", i))
	}
	return out
}

func assertExactly(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("lines:\n got %q\nwant %q", got, want)
	}
}

// settle waits until the follower has surely polled at least once more.
func settle() { time.Sleep(5 * DefaultPoll / 10 * 3) }

// startAtEnd follows a new file holding "line 0" from its end.
func startAtEnd(t *testing.T) (string, *collector, func()) {
	path := filepath.Join(t.TempDir(), "mail.log")
	appendLines(t, path, 0, 1)
	c, stop := run(t, newFile(path, nil))
	settle()
	return path, c, stop
}

func newFile(path string, start *Position) *File {
	return &File{Path: path, Start: start, Poll: 20 * time.Millisecond}
}

func TestFileStartsAtEndThenResumes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	appendLines(t, path, 0, 5)
	c, stop := run(t, newFile(path, nil))
	settle()
	appendLines(t, path, 5, 8)
	assertExactly(t, c.waitLines(t, 3), want(5, 8))
	stop()
	_, pos := c.snapshot()

	// Stopped: more lines, a partial one; a restart reads each once.
	appendLines(t, path, 8, 10)
	c2, stop2 := run(t, newFile(path, &pos))
	assertExactly(t, c2.waitLines(t, 2), want(8, 10))
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	fmt.Fprint(f, "line 10 sta")
	settle()
	fmt.Fprint(f, "rts here\n")
	f.Close()
	got := c2.waitLines(t, 3)
	if got[2] != "line 10 starts here" {
		t.Fatalf("partial line handed over as %q", got[2])
	}
	stop2()
}

func TestFileRotationByRename(t *testing.T) {
	path, c, stop := startAtEnd(t)
	appendLines(t, path, 1, 50)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	// The writer has not reopened yet: it still appends to the old file,
	// and logrotate already created an empty new one.
	appendLines(t, path+".1", 50, 60)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	settle()
	appendLines(t, path+".1", 60, 70)
	settle()
	appendLines(t, path, 70, 100)
	assertExactly(t, c.waitLines(t, 99), want(1, 100))
	stop()
}

// TestFileCopyTruncate: logrotate's copytruncate while the follower runs
// (it has read up to the truncation; the file regrows past the old offset
// before the next poll) and while it is stopped (the lines logged between
// the last read and the truncation are read from the copy, PATH.1).
func TestFileCopyTruncate(t *testing.T) {
	copyTruncate := func(t *testing.T, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+".1", b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("running", func(t *testing.T) {
		path, c, stop := startAtEnd(t)
		appendLines(t, path, 1, 30)
		c.waitLines(t, 29)
		copyTruncate(t, path)
		appendLines(t, path, 30, 90)
		assertExactly(t, c.waitLines(t, 89), want(1, 90))
		stop()
	})
	t.Run("stopped", func(t *testing.T) {
		path, c, stop := startAtEnd(t)
		appendLines(t, path, 1, 3)
		c.waitLines(t, 2)
		stop()
		_, pos := c.snapshot()
		appendLines(t, path, 3, 30)
		copyTruncate(t, path)
		appendLines(t, path, 30, 90)
		c2, stop2 := run(t, newFile(path, &pos))
		assertExactly(t, c2.waitLines(t, 87), want(3, 90))
		stop2()
	})
}

func TestFileRotatedWhileStopped(t *testing.T) {
	path, c, stop := startAtEnd(t)
	appendLines(t, path, 1, 10)
	c.waitLines(t, 9)
	stop()
	_, pos := c.snapshot()
	appendLines(t, path, 10, 20)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendLines(t, path, 20, 30)
	c2, stop2 := run(t, newFile(path, &pos))
	assertExactly(t, c2.waitLines(t, 20), want(10, 30))
	stop2()
}

func TestFileOverlongLineSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c, stop := run(t, newFile(path, nil))
	settle()
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	big := make([]byte, 3*maxLine)
	for i := range big {
		big[i] = 'x'
	}
	f.Write(big)
	f.Write([]byte("\nline 1\n"))
	f.Close()
	assertExactly(t, c.waitLines(t, 1), want(1, 2))
	stop()
}
