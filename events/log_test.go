package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func ev(i int) Event {
	return Event{Time: time.Date(2026, 5, 1, 0, 0, i, 0, time.UTC), Kind: InboundBlocked, Domain: "bank.example",
		Rule: "bank-partners", Source: "table/inbound.yaml:3", Reason: fmt.Sprint(i)}
}

func reasons(evs []Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Reason)
	}
	return strings.Join(s, ",")
}

func writeEvents(t *testing.T, path string, opts LogOptions, from, to int) {
	t.Helper()
	l, err := OpenLog(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < to; i++ {
		l.Append(ev(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l.Dropped() != 0 {
		t.Fatalf("dropped %d events", l.Dropped())
	}
}

// A restart loses nothing: events written before Close come back, in
// order, into the new process's ring.
func TestLogSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "events.jsonl")
	writeEvents(t, path, LogOptions{}, 0, 5)

	l, err := OpenLog(path, LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := NewRing(3)
	if err := l.Attach(r); err != nil {
		t.Fatal(err)
	}
	if got := reasons(r.Recent(0)); got != "4,3,2" {
		t.Fatalf("restored ring = %s, want 4,3,2", got)
	}
	if len(r.Totals()) != 0 {
		t.Errorf("restored events counted in Totals: %v", r.Totals())
	}
	r.Publish(ev(5))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := readTail(path, DefaultLogKeep, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	if reasons(got) != "0,1,2,3,4,5" {
		t.Fatalf("log after restart = %s", reasons(got))
	}
	if got[5] != ev(5) {
		t.Errorf("event changed on its way through the log:\n got %+v\nwant %+v", got[5], ev(5))
	}
}

// After a crash the last line may be torn: it is skipped, never fatal,
// and the next event still gets a line of its own.
func TestLogTornLastLine(t *testing.T) {
	for _, tc := range []struct {
		name, tail string
	}{
		{"half a JSON object", `{"time":"2026-05-01T00:00:09Z","kind":"inbou`},
		{"binary garbage", "\x00\x00\x00\x00"},
		{"just an opening brace", "{"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.jsonl")
			writeEvents(t, path, LogOptions{}, 0, 2)
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(tc.tail)
			f.Close()

			got, err := readTail(path, 0, 10, nil)
			if err != nil || reasons(got) != "0,1" {
				t.Fatalf("readTail = %s, %v; want 0,1", reasons(got), err)
			}
			writeEvents(t, path, LogOptions{}, 2, 3)
			got, err = readTail(path, 0, 10, nil)
			if err != nil || reasons(got) != "0,1,2" {
				t.Fatalf("after appending: %s, %v; want 0,1,2", reasons(got), err)
			}
		})
	}
}

func TestLogRotatesBySize(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl")
	line, _ := os.ReadFile(func() string { p := filepath.Join(dir, "one"); writeEvents(t, p, LogOptions{}, 10, 11); return p }())
	opts := LogOptions{MaxSize: int64(len(line)) * 10, Keep: 2}
	writeEvents(t, path, opts, 10, 55) // two-digit reasons: every line has the same length

	for _, name := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > opts.MaxSize {
			t.Errorf("%s is %d bytes, over MaxSize %d", name, st.Size(), opts.MaxSize)
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Errorf("%s.3 exists; Keep is 2", path)
	}
	got, err := readTail(path, opts.Keep, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 45 events, 10 a file: the newest 5 in PATH, 10 each in PATH.1 and PATH.2.
	if len(got) != 25 || got[0].Reason != "30" || got[24].Reason != "54" {
		t.Fatalf("tail across rotated files = %s", reasons(got))
	}
	got, _ = readTail(path, opts.Keep, 7, nil)
	if reasons(got) != "48,49,50,51,52,53,54" {
		t.Fatalf("last 7 = %s", reasons(got))
	}
}

// The tail is read backwards in blocks: lines across block boundaries, a
// huge damaged line and blank lines must not confuse it.
func TestReadTailBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	var b bytes.Buffer
	for i := 0; i < 3000; i++ { // ~200 bytes each: several 64 KiB blocks
		e := ev(i)
		e.Reason = fmt.Sprintf("%d %s", i, strings.Repeat("x", i%300))
		fmt.Fprintf(&b, `{"time":%q,"kind":"inbound_blocked","reason":%q}`+"\n", e.Time.Format(time.RFC3339Nano), e.Reason)
		if i == 1500 {
			b.WriteString(strings.Repeat("y", maxLine+100) + "\n\n")
		}
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readTail(path, 0, 5000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3000 {
		t.Fatalf("read %d events, want 3000", len(got))
	}
	for i, e := range got {
		if !strings.HasPrefix(e.Reason, fmt.Sprint(i)+" ") || len(e.Reason) != len(fmt.Sprint(i))+1+i%300 {
			t.Fatalf("event %d has reason %.20q…", i, e.Reason)
		}
	}
}

func TestLogAppendNeverBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := OpenLog(path, LogOptions{Queue: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		l.Append(ev(i)) // returns whether or not the writer keeps up
	}
	l.Close()
	l.Append(ev(1))
	got, _ := readTail(path, 0, 20000, nil)
	if uint64(len(got))+l.Dropped() != 10001 {
		t.Errorf("written %d + dropped %d != 10001 appended", len(got), l.Dropped())
	}
}

func TestReadTailMissingFile(t *testing.T) {
	got, err := readTail(filepath.Join(t.TempDir(), "none"), 3, 10, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("readTail of a missing log = %v, %v; want empty, nil", got, err)
	}
}

// lockedBuffer is a log output tests read while a writer may log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// A rotation whose renames work but whose reopen fails (EMFILE) is not
// repeated on every later batch: the rotated files stay as they are, each
// batch only retries the open (its events are lost and counted), the
// failure is logged once, and once the open works the log goes on in a
// new PATH.
func TestLogFailedReopenKeepsRotatedFiles(t *testing.T) {
	for _, tc := range []struct {
		name    string
		failing int // batches written while the open fails, the rotating one included
	}{
		{"one failing batch", 1},
		{"as many as Keep", 2},
		{"more than Keep", 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "events.jsonl")
			var fail atomic.Bool
			var out lockedBuffer
			l, err := OpenLog(path, LogOptions{
				MaxSize: int64(len(mustLine(t, ev(10)))) * 2, // two lines a file
				Keep:    2,
				Logger:  slog.New(slog.NewTextHandler(&out, nil)),
				openFile: func(name string, flag int, perm fs.FileMode) (*os.File, error) {
					if fail.Load() {
						return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EMFILE}
					}
					return os.OpenFile(name, flag, perm)
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			// write appends one event and waits for the writer to be done
			// with it: written, or counted as failed.
			write := func(i int) {
				t.Helper()
				failed := l.WriteErrors()
				l.Append(ev(i))
				deadline := time.Now().Add(10 * time.Second)
				for {
					got, _ := readTail(path, 2, 100, slog.New(slog.DiscardHandler))
					if l.WriteErrors() > failed || len(got) > 0 && got[len(got)-1].Reason == fmt.Sprint(i) {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("event %d neither written nor failed", i)
					}
					time.Sleep(time.Millisecond)
				}
			}
			for i := 10; i < 16; i++ { // PATH.2 10,11; PATH.1 12,13; PATH 14,15
				write(i)
			}
			fail.Store(true)
			for i := 20; i < 20+tc.failing; i++ { // the first rotates: PATH.2 12,13; PATH.1 14,15
				write(i)
			}
			if n := l.WriteErrors(); n != uint64(tc.failing) {
				t.Errorf("WriteErrors = %d, want %d", n, tc.failing)
			}
			fail.Store(false)
			write(30) // PATH 30
			write(31) // PATH 30,31
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			var files []string
			for _, b := range readFiles(t, path, 4) {
				var evs []string
				for line := range bytes.Lines(b) {
					var e Event
					if err := json.Unmarshal(line, &e); err != nil {
						t.Fatal(err)
					}
					evs = append(evs, e.Reason)
				}
				files = append(files, strings.Join(evs, ","))
			}
			if got, want := strings.Join(files, " | "), "12,13 | 14,15 | 30,31"; got != want {
				t.Errorf("files (oldest first) %q, want %q", got, want)
			}
			logged := out.String()
			if n := strings.Count(logged, "write failed"); n != 1 {
				t.Errorf("the failure logged %d times, want once:\n%s", n, logged)
			}
			if !strings.Contains(logged, "too many open files") || !strings.Contains(logged, "reopened after a failed rotation") {
				t.Errorf("log lacks the error or the recovery:\n%s", logged)
			}
		})
	}
}
