// Package logbuf is the daemon's log output: an io.Writer that queues each
// log record in memory and lets one writer goroutine write everything
// queued since its last write with a single write(2) — group commit, as
// the event log does (events.Log).
//
// Why: the daemon logs every inbound decision that blocks or would block
// mail. Written straight to stderr, each such line would be a system call
// on the request's path (and, under systemd, a wake-up of journald); here
// a line costs a copy into a buffer (bench/README.md has what that
// saved). An idle daemon's line is still written at once (the writer
// wakes for it), a busy daemon's lines share writes.
//
// The queue is bounded (Options.MaxPending): when the output cannot keep
// up (a stuck journald, a full disk behind a redirect), further lines are
// dropped and counted rather than making lookups and policy requests wait
// for the log — a stalled request would be deferred mail. Options.OnDrop
// is told the count once the output moves again. Every decision that is
// logged is also an event (ring, event log, metrics), so a dropped line
// loses no decision.
package logbuf

import (
	"io"
	"sync"
	"time"
)

// DefaultMaxPending is the queue's bound when Options.MaxPending is 0:
// about 2,500 log lines of a blocked inbound request.
const DefaultMaxPending = 1 << 20

// Options configure a Writer.
type Options struct {
	// MaxPending bounds the bytes queued and not yet written; 0 means
	// DefaultMaxPending.
	MaxPending int
	// OnDrop, if set, is called from the writer goroutine after a write
	// with the number of lines dropped since the last call (never 0). It
	// may log: the Writer is not locked then.
	OnDrop func(lines uint64)
	// Linger is the least time between two writes: a record queued
	// sooner after a write waits for the rest of it, and the records
	// queued meanwhile share its write. A record arriving when the last
	// write is older is written at once, so an idle daemon's lines are
	// not delayed. 0 means DefaultLinger; negative, no wait.
	Linger time.Duration
}

// DefaultLinger is Options.Linger when it is 0. Under load it caps the
// writes at 1,000 a second, each a system call and, under systemd, a
// wake-up of journald: batches of a few lines cost the daemon more in
// write(2) and in waking this goroutine. A line is late by at most this.
const DefaultLinger = time.Millisecond

// Writer queues whole records and writes them to the underlying writer
// in batches. Each Write must be one whole record (log/slog's handlers
// write each record with a single Write). Safe for concurrent use.
type Writer struct {
	out  io.Writer
	opts Options

	mu       sync.Mutex
	buf      []byte // queued records, in the order written
	spare    []byte // the buffer the writer goroutine last wrote, for reuse
	dropped  uint64 // records dropped since the last OnDrop
	closed   bool
	finished bool // the writer goroutine has written its last batch

	outMu sync.Mutex    // serialises writes to out
	wake  chan struct{} // capacity 1: a batch is waiting
	done  chan struct{} // closed when the writer goroutine has ended
}

// New returns a Writer writing to out, and starts its writer goroutine;
// Close stops it.
func New(out io.Writer, opts Options) *Writer {
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.Linger == 0 {
		opts.Linger = DefaultLinger
	}
	w := &Writer{out: out, opts: opts, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.run()
	return w
}

// Write queues p, one whole record, and returns len(p), nil: the record is
// written (or dropped, when MaxPending bytes are already waiting) by the
// writer goroutine. A record written after Close joins the writer
// goroutine's last batch while it has not finished (it is never dropped),
// and once it has, Write writes it itself.
//
// Write never waits for the writer goroutine: OnDrop runs on it and may
// log, so a Write that waited for it to end would wait for itself (serve
// hung at shutdown when Close came while a flush was about to report
// drops).
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.finished {
		w.mu.Unlock()
		w.outMu.Lock()
		defer w.outMu.Unlock()
		return w.out.Write(p)
	}
	if w.closed {
		w.buf = append(w.buf, p...) // run writes it before it finishes
		w.mu.Unlock()
		return len(p), nil
	}
	if len(w.buf) > 0 && len(w.buf)+len(p) > w.opts.MaxPending {
		w.dropped++
		w.mu.Unlock()
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	select {
	case w.wake <- struct{}{}:
	default: // the writer has been woken already and will take p too
	}
	w.mu.Unlock()
	return len(p), nil
}

// run writes batches until Close, then writes what is left, including
// records written meanwhile, and marks the Writer finished.
func (w *Writer) run() {
	defer close(w.done)
	var last time.Time // of the last write
	for {
		_, open := <-w.wake
		if d := w.opts.Linger - time.Since(last); open && d > 0 {
			time.Sleep(d) // let more records join this batch
		}
		// After Close, OnDrop is not called: its line would come after
		// the last batch.
		w.flush(open)
		last = time.Now()
		if !open {
			break
		}
	}
	for {
		w.mu.Lock()
		if len(w.buf) == 0 {
			w.finished = true
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		w.flush(false)
	}
}

// flush writes every queued record with one Write on the underlying
// writer. A failed write is not retried: there is nowhere to report it
// but the log itself.
func (w *Writer) flush(report bool) {
	w.mu.Lock()
	b := w.buf
	w.buf, w.spare = w.spare[:0], nil
	dropped := w.dropped
	w.dropped = 0
	w.mu.Unlock()
	if len(b) > 0 {
		w.outMu.Lock()
		_, _ = w.out.Write(b)
		w.outMu.Unlock()
	}
	// Reused: a buffer never grows much past MaxPending, so two of them
	// are all the memory the Writer keeps.
	w.mu.Lock()
	w.spare = b[:0]
	w.mu.Unlock()
	if dropped > 0 && report && w.opts.OnDrop != nil {
		w.opts.OnDrop(dropped)
	}
}

// Close writes what is queued and stops the writer goroutine (lines
// dropped since the last OnDrop are then not reported); later Writes are
// written after it, unbounded (see Write). It does not close the
// underlying writer. Close may be called more than once.
func (w *Writer) Close() error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.wake)
	}
	w.mu.Unlock()
	<-w.done
	return nil
}
