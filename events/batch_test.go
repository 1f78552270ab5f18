package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// readLines returns every line of the log's files, oldest file first
// (PATH.keep … PATH.1, PATH; missing ones skipped), each file's lines in
// order, and fails the test on a file over maxSize or a rotated file that
// ends inside a line.
func readLines(t *testing.T, path string, keep int, maxSize int64) [][]byte {
	t.Helper()
	files := readFiles(t, path, keep)
	var lines [][]byte
	for i, b := range files {
		if maxSize > 0 && int64(len(b)) > maxSize {
			t.Errorf("file %d of %d is %d bytes, over MaxSize %d", i+1, len(files), len(b), maxSize)
		}
		if len(b) > 0 && b[len(b)-1] != '\n' && i < len(files)-1 {
			t.Errorf("rotated file %d of %d ends inside a line", i+1, len(files))
		}
		for line := range bytes.Lines(b) {
			lines = append(lines, line)
		}
	}
	return lines
}

// Publishers on many goroutines, a queue that never overflows, files
// rotated every few dozen lines while batches are being written, and
// Close right after the last Append: every event is in the files, each
// publisher's events in the order it appended them, every line whole and
// in one file, no file over MaxSize.
func TestLogConcurrentAppendersLoseNothing(t *testing.T) {
	const writers, each = 8, 2000
	path := filepath.Join(t.TempDir(), "events.jsonl")
	opts := LogOptions{MaxSize: 16 << 10, Keep: 1000, Queue: writers * each}
	l, err := OpenLog(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := ev(i)
				e.Reason = fmt.Sprintf("%d %d", w, i)
				l.Append(e)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l.Dropped() != 0 || l.WriteErrors() != 0 {
		t.Fatalf("dropped %d, write errors %d", l.Dropped(), l.WriteErrors())
	}
	next := make([]int, writers)
	lines := readLines(t, path, opts.Keep, opts.MaxSize)
	for n, line := range lines {
		var e Event
		if err := json.Unmarshal(line, &e); err != nil || !bytes.HasSuffix(line, []byte("}\n")) {
			t.Fatalf("line %d is not one whole event: %q (%v)", n, line, err)
		}
		var w, i int
		if _, err := fmt.Sscanf(e.Reason, "%d %d", &w, &i); err != nil || w < 0 || w >= writers {
			t.Fatalf("line %d: reason %q", n, e.Reason)
		}
		if i != next[w] {
			t.Fatalf("line %d: publisher %d's event %d, want its event %d (lost or reordered)", n, w, i, next[w])
		}
		next[w]++
	}
	if len(lines) != writers*each {
		t.Fatalf("%d lines, want %d", len(lines), writers*each)
	}
}

// quietLog is a Log without its writer goroutine, for calling writeLines
// directly.
func quietLog(t *testing.T, path string, opts LogOptions) *Log {
	t.Helper()
	l := &Log{path: path, opts: opts, log: slog.New(slog.DiscardHandler)}
	if err := l.open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.f.Close() })
	return l
}

// A batch written at once leaves exactly the files that writing its lines
// one by one leaves: split at every rotation point, never a line across
// two files, a line longer than MaxSize alone in its file.
func TestWriteLinesBatchRotatesLikeOneByOne(t *testing.T) {
	lengths := func(pattern ...int) []int {
		var out []int
		for range 6 {
			out = append(out, pattern...)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		maxSize int64
		lines   []int // lengths, '\n' included (at least 5: a 4-digit number)
		batches []int // batch sizes, cycled
	}{
		{"one batch, many rotations", 100, lengths(30, 30, 30, 30), []int{1000}},
		{"lines that fill a file exactly", 90, lengths(30, 30, 30), []int{1000}},
		{"uneven lines and batches", 128, lengths(10, 70, 6, 40, 90, 7), []int{3, 1, 7, 2}},
		{"a line longer than MaxSize", 64, lengths(20, 200, 20, 20), []int{5, 2}},
		{"every line longer than MaxSize", 16, lengths(40, 41), []int{4}},
		{"batches of one", 100, lengths(30, 50, 20), []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b []byte
			var ends []int
			for i, n := range tc.lines {
				b = append(b, fmt.Sprintf("%04d%s\n", i, strings.Repeat("x", n-5))...)
				ends = append(ends, len(b))
			}
			keep := len(tc.lines) + 1
			write := func(dir string, batches []int) [][]byte {
				path := filepath.Join(dir, "events.jsonl")
				l := quietLog(t, path, LogOptions{MaxSize: tc.maxSize, Keep: keep})
				start, i := 0, 0
				for k := 0; i < len(ends); k++ {
					j := min(i+batches[k%len(batches)], len(ends))
					rel := make([]int, 0, j-i) // writeLines wants offsets into its slice
					for _, e := range ends[i:j] {
						rel = append(rel, e-start)
					}
					if lost, err := l.writeLines(b[start:ends[j-1]], rel); lost != 0 || err != nil {
						t.Fatalf("writeLines: lost %d, %v", lost, err)
					}
					start, i = ends[j-1], j
				}
				return readFiles(t, path, keep)
			}
			got := write(t.TempDir(), tc.batches)
			want := write(t.TempDir(), []int{1})
			if len(got) != len(want) {
				t.Fatalf("batched: %d files, one by one: %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Errorf("file %d:\nbatched    %q\none by one %q", i, got[i], want[i])
				}
				if len(want[i]) > int(tc.maxSize) && bytes.Count(want[i], []byte("\n")) != 1 {
					t.Errorf("file %d is over MaxSize with more than one line: %q", i, want[i])
				}
			}
			if all := bytes.Join(got, nil); !bytes.Equal(all, b) {
				t.Errorf("the files together are not the lines in order")
			}
		})
	}
}

// readFiles returns the contents of the log's files, oldest first.
func readFiles(t *testing.T, path string, keep int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := keep; i >= 0; i-- {
		name := path
		if i > 0 {
			name += "." + strconv.Itoa(i)
		}
		b, err := os.ReadFile(name)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	if len(out) > 0 && len(out[len(out)-1]) == 0 {
		out = out[:len(out)-1] // PATH reopened empty after the last rotation
	}
	return out
}

// A writer that cannot keep up (the log is a FIFO nobody reads yet, as a
// stuck disk would be) never makes Append wait and never grows memory past
// the queue: the events beyond it are dropped and counted, and every event
// not counted as dropped reaches the file, in order, once the writer can
// write again.
func TestLogBoundedWhenWriterIsStuck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	type result struct {
		lines []string
		err   error
	}
	reader := make(chan *os.File, 1)
	goOn := make(chan struct{})
	read := make(chan result, 1)
	go func() {
		f, err := os.Open(path) // blocks until OpenLog opens the writing end
		if err != nil {
			reader <- nil
			read <- result{err: err}
			return
		}
		reader <- f
		<-goOn // wait until the test lets the writer go on
		var r result
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			r.lines = append(r.lines, sc.Text())
		}
		r.err = sc.Err()
		read <- r
	}()
	const queue, total = 64, 5000
	var out lockedBuffer
	l, err := OpenLog(path, LogOptions{Queue: queue, Logger: slog.New(slog.NewTextHandler(&out, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f := <-reader
	if f == nil {
		t.Fatal((<-read).err)
	}
	defer f.Close()

	start := time.Now()
	for i := range total {
		e := ev(i)
		e.Reason = strconv.Itoa(i)
		l.Append(e)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("%d Appends to a stuck writer took %v", total, d)
	}
	// Stuck: at most the queue, one batch (≤ maxBatch) and what the pipe
	// holds (64 KiB on Linux) are not dropped.
	pipeLines := (64<<10)/len(mustLine(t, ev(0))) + 1
	batchLines := maxBatch/len(mustLine(t, ev(0))) + 1
	if kept := total - int(l.Dropped()); kept > queue+batchLines+pipeLines {
		t.Errorf("%d events kept in memory for a stuck writer; the queue holds %d", kept, queue)
	}
	close(goOn) // start reading
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	r := <-read
	if r.err != nil {
		t.Fatal(r.err)
	}
	if uint64(len(r.lines))+l.Dropped() != total {
		t.Fatalf("%d written + %d dropped != %d appended", len(r.lines), l.Dropped(), total)
	}
	// The drops are logged, but not thousands of times: the first at once,
	// the rest of the minute summed up by Close.
	var drops []string
	for line := range strings.Lines(out.String()) {
		if strings.Contains(line, "events dropped") {
			drops = append(drops, line)
		}
	}
	if len(drops) != 2 || !strings.Contains(drops[0], " dropped=1 ") ||
		!strings.Contains(drops[1], fmt.Sprintf(" dropped=%d dropped_total=%d", l.Dropped()-1, l.Dropped())) {
		t.Errorf("drops logged as:\n%s", strings.Join(drops, ""))
	}
	prev := -1
	for _, line := range r.lines {
		var e Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		i, _ := strconv.Atoi(e.Reason)
		if i <= prev {
			t.Fatalf("event %d written after event %d", i, prev)
		}
		prev = i
	}
}

func mustLine(t testing.TB, e Event) []byte {
	t.Helper()
	b, err := appendJSON(nil, e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
