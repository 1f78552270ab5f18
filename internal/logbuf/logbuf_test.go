package logbuf

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is an io.Writer that keeps what it is given, counts its
// Writes, and can be made to block (a stuck journald) until released.
type recorder struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	gate   chan struct{} // nil: never blocks; else each Write waits for it to be closed
	inside chan struct{} // if not nil, gets a value when a Write starts waiting
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.gate != nil {
		if r.inside != nil {
			select {
			case r.inside <- struct{}{}:
			default:
			}
		}
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	return r.buf.Write(p)
}

func (r *recorder) snapshot() (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String(), r.writes
}

func line(w, i int) string { return fmt.Sprintf("writer=%d n=%d\n", w, i) }

// Many goroutines logging at once: after Close every record is in the
// output, whole, and each goroutine's records are in the order it wrote
// them.
func TestWriterKeepsEveryRecordInOrder(t *testing.T) {
	const writers, each = 8, 5000
	rec := &recorder{}
	w := New(rec, Options{MaxPending: 64 << 20})
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				if n, err := w.Write([]byte(line(g, i))); n != len(line(g, i)) || err != nil {
					t.Errorf("Write = %d, %v", n, err)
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out, writes := rec.snapshot()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != writers*each {
		t.Fatalf("%d lines written, want %d", len(lines), writers*each)
	}
	next := make([]int, writers)
	for _, l := range lines {
		var g, i int
		if _, err := fmt.Sscanf(l, "writer=%d n=%d", &g, &i); err != nil {
			t.Fatalf("torn or foreign line %q", l)
		}
		if i != next[g] {
			t.Fatalf("writer %d: record %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
	t.Logf("%d records in %d writes", len(lines), writes)
}

// An idle daemon's line reaches the output at once, without Close.
func TestWriterWritesPromptlyWhenIdle(t *testing.T) {
	rec := &recorder{}
	w := New(rec, Options{})
	defer w.Close()
	for i := range 3 {
		_, _ = w.Write([]byte(line(0, i)))
		deadline := time.Now().Add(5 * time.Second)
		for {
			out, _ := rec.snapshot()
			if strings.Contains(out, line(0, i)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("line %d not written within 5 s; output %q", i, out)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// While the output is busy with one write, the records that arrive are
// written together, with one Write, when it returns.
func TestWriterBatchesWhileOutputIsBusy(t *testing.T) {
	rec := &recorder{gate: make(chan struct{}), inside: make(chan struct{}, 1)}
	w := New(rec, Options{})
	_, _ = w.Write([]byte(line(0, 0)))
	<-rec.inside // the writer is inside the first Write
	const more = 1000
	for i := 1; i <= more; i++ {
		_, _ = w.Write([]byte(line(0, i)))
	}
	close(rec.gate)
	_ = w.Close()
	out, writes := rec.snapshot()
	if got := strings.Count(out, "\n"); got != more+1 {
		t.Fatalf("%d lines written, want %d", got, more+1)
	}
	if writes != 2 {
		t.Errorf("%d records took %d writes, want 2 (the first, then the batch)", more+1, writes)
	}
}

// A stuck output never makes Write wait: past MaxPending bytes the
// records are dropped and counted, and OnDrop hears the count once the
// output moves again. What was queued is written, in order.
func TestWriterBoundedWhenOutputIsStuck(t *testing.T) {
	rec := &recorder{gate: make(chan struct{}), inside: make(chan struct{}, 1)}
	var reported atomic.Uint64
	dropNotice := make(chan struct{}, 1)
	w := New(rec, Options{MaxPending: 4096, OnDrop: func(n uint64) {
		reported.Add(n)
		dropNotice <- struct{}{}
	}})
	_, _ = w.Write([]byte(line(0, 0)))
	<-rec.inside
	const total = 10000
	start := time.Now()
	for i := 1; i < total; i++ {
		_, _ = w.Write([]byte(line(0, i)))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("%d Writes to a stuck output took %v", total, d)
	}
	close(rec.gate)
	select {
	case <-dropNotice:
	case <-time.After(5 * time.Second):
		t.Fatal("OnDrop not called after the output moved again")
	}
	_ = w.Close()
	out, _ := rec.snapshot()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(out) > 4096+len(line(0, 0)) {
		t.Errorf("%d bytes written, more than the first record and MaxPending 4096", len(out))
	}
	if uint64(len(lines))+reported.Load() != total {
		t.Fatalf("%d written + %d reported dropped != %d", len(lines), reported.Load(), total)
	}
	for i, l := range lines {
		if l != strings.TrimSuffix(line(0, i), "\n") {
			t.Fatalf("line %d is %q, want record %d (the queued ones are the first, in order)", i, l, i)
		}
	}
}

// After Close, Write goes straight to the output, after what was queued.
func TestWriterAfterClose(t *testing.T) {
	rec := &recorder{}
	w := New(rec, Options{})
	_, _ = w.Write([]byte("a\n"))
	_ = w.Close()
	_ = w.Close() // twice is fine
	if _, err := w.Write([]byte("b\n")); err != nil {
		t.Fatal(err)
	}
	if out, _ := rec.snapshot(); out != "a\nb\n" {
		t.Fatalf("output %q, want %q", out, "a\nb\n")
	}
}

// OnDrop may log through the Writer itself (serve does). When Close comes
// while the writer goroutine is about to report drops, that record must
// be written and neither Close nor the Write may hang: they did, about
// one shutdown in six under load, when Write after Close waited for the
// writer goroutine, which was waiting in OnDrop for the Write.
func TestWriterOnDropLogsDuringClose(t *testing.T) {
	for i := 0; i < 50; i++ {
		rec := &recorder{gate: make(chan struct{}), inside: make(chan struct{}, 1)}
		var w *Writer
		w = New(rec, Options{MaxPending: 64, OnDrop: func(n uint64) {
			_, _ = w.Write([]byte(fmt.Sprintf("dropped %d\n", n)))
		}})
		_, _ = w.Write([]byte(line(0, 0)))
		<-rec.inside // the writer goroutine is writing, the output stuck
		for j := 1; j < 10; j++ {
			_, _ = w.Write([]byte(line(0, j))) // beyond MaxPending: some dropped
		}
		closed := make(chan struct{})
		go func() { _ = w.Close(); close(closed) }()
		if i%2 == 0 {
			time.Sleep(time.Millisecond) // Close first, or not: both orders
		}
		close(rec.gate)
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("Close hung: OnDrop's Write waited for the writer goroutine")
		}
		out, _ := rec.snapshot()
		if !strings.HasPrefix(out, line(0, 0)) {
			t.Fatalf("output %q does not start with the first record", out)
		}
		// The drop notice OnDrop logged is written too: the drops are
		// reported by the flush after the stuck one, which the wake-up
		// they queued starts even when Close came first.
		if !strings.Contains(out, "dropped ") {
			t.Fatalf("round %d: OnDrop's line is not in the output %q", i, out)
		}
	}
}

// BenchmarkWrite is the cost of one log record to the caller, with 1 and
// 8 goroutines logging, the output discarded.
func BenchmarkWrite(b *testing.B) {
	rec := []byte(`time=2026-12-02T18:40:09.128Z level=INFO msg="inbound TLS policy" event=inbound_blocked rule=bank-partners source=table/partners.yaml:19 sender=a@bank.example` + "\n")
	for _, g := range []int{1, 8} {
		b.Run(fmt.Sprintf("writers=%d", g), func(b *testing.B) {
			w := New(io.Discard, Options{MaxPending: 64 << 20})
			b.SetParallelism(g)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, _ = w.Write(rec)
				}
			})
			_ = w.Close()
		})
	}
}

// Records that follow a write within Linger wait for it to pass and share
// one write; the first record after an idle spell is written at once.
func TestWriterLingersUnderLoad(t *testing.T) {
	rec := &recorder{}
	const linger = 300 * time.Millisecond
	w := New(rec, Options{Linger: linger})
	defer w.Close()
	start := time.Now()
	_, _ = w.Write([]byte(line(0, 0)))
	for {
		if out, _ := rec.snapshot(); strings.Contains(out, line(0, 0)) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if d := time.Since(start); d >= linger {
		t.Errorf("the first record took %v, want it written at once", d)
	}
	const more = 100
	for i := 1; i <= more; i++ {
		_, _ = w.Write([]byte(line(0, i)))
	}
	for {
		if out, _ := rec.snapshot(); strings.Count(out, "\n") == more+1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if d := time.Since(start); d < linger {
		t.Errorf("the burst was written %v after the first record, want at least Linger (%v)", d, linger)
	}
	if _, writes := rec.snapshot(); writes != 2 {
		t.Errorf("%d records took %d writes, want 2 (the first, then the burst)", more+1, writes)
	}
}
