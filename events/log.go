package events

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of LogOptions.
const (
	DefaultLogMaxSize = 10 << 20 // bytes
	DefaultLogKeep    = 3
	DefaultLogQueue   = 4096
)

// maxLine bounds one line read back by Tail; our own lines are far shorter,
// anything longer is damage and is skipped.
const maxLine = 1 << 20

// LogOptions configures a Log. Zero values take the defaults.
type LogOptions struct {
	// MaxSize is the size in bytes past which the file is rotated
	// (default 10 MiB).
	MaxSize int64
	// Keep is how many rotated files are kept: PATH.1 (newest) … PATH.Keep
	// (default 3).
	Keep int
	// Queue is how many events may wait for the writer (default 4096);
	// beyond that Append drops and counts them rather than block the
	// request that published them.
	Queue int
	// Logger receives write errors, skipped lines and, at most once per
	// dropLogEvery, events dropped (default slog.Default()).
	Logger *slog.Logger

	// openFile opens the log's files (default os.OpenFile); tests inject
	// failures with it.
	openFile func(name string, flag int, perm fs.FileMode) (*os.File, error)
}

// dropLogEvery is the least time between two log lines about events
// dropped because the queue was full: a failing disk drops thousands a
// second, and each is counted (Dropped) anyway.
const dropLogEvery = time.Minute

// Log is an append-only JSON-lines event file, one Event per line, rotated
// by size (PATH → PATH.1 → … → PATH.Keep, the oldest removed). Append hands
// events to a background writer and never blocks; Close drains it.
//
// A crash can leave a torn last line: Tail skips every line that is not a
// valid event, and OpenLog first ends such a line so the next event starts
// on a line of its own.
type Log struct {
	path string
	opts LogOptions
	log  *slog.Logger

	queue   chan Event
	done    chan struct{}
	closing sync.Once
	mu      sync.RWMutex // held for reading by Append, for writing by Close
	closed  bool
	// rotating is held by rotate while it renames the files and by scan
	// while it opens them, so a reader sees every file once.
	rotating sync.Mutex

	f    *os.File // owned by the writer goroutine (run), as are size, torn and reopen
	size int64
	torn bool // the file's last line lacks its '\n' (a crash, a short write)
	// reopen: a rotation moved the file away but opening it anew failed;
	// the next write opens it first, without rotating (again) what was
	// rotated already.
	reopen bool

	dropped      atomic.Uint64
	dropReported atomic.Uint64 // Dropped when last logged
	dropLogged   atomic.Int64  // when drops were last logged, Unix ns
	failed       atomic.Uint64
}

// OpenLog opens (creating it and its directory if needed) the event log at
// path and starts its writer.
func OpenLog(path string, opts LogOptions) (*Log, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultLogMaxSize
	}
	if opts.Keep <= 0 {
		opts.Keep = DefaultLogKeep
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultLogQueue
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	l := &Log{path: path, opts: opts, log: opts.Logger, queue: make(chan Event, opts.Queue), done: make(chan struct{})}
	if err := l.open(); err != nil {
		return nil, err
	}
	go l.run()
	return l, nil
}

// open opens l.path for appending and ends a torn last line.
func (l *Log) open() error {
	openFile := l.opts.openFile
	if openFile == nil {
		openFile = os.OpenFile
	}
	f, err := openFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("event log: %w", err)
	}
	l.f, l.size, l.torn = f, st.Size(), false
	if l.size > 0 {
		last := make([]byte, 1)
		if r, err := os.Open(l.path); err == nil {
			_, err = r.ReadAt(last, l.size-1)
			r.Close()
			if err == nil && last[0] != '\n' {
				l.log.Warn("event log: the last line is torn (crash?); it will be skipped", "path", l.path)
				l.torn = true
				_ = l.endTornLine() // or before the next write
			}
		}
	}
	return nil
}

// Path returns the file the log writes to.
func (l *Log) Path() string { return l.path }

// Append queues e for writing. It never blocks: when the queue is full (the
// disk is slow or failing) the event is dropped and counted (Dropped). It
// has the signature Ring.Subscribe wants.
func (l *Log) Append(e Event) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.dropped.Add(1)
		return
	}
	select {
	case l.queue <- e:
	default:
		l.drop()
	}
}

// drop counts an event the full queue refused and logs the drops at most
// once per dropLogEvery: the first at once, those that follow within the
// interval summed into the next line (or Close's).
func (l *Log) drop() {
	n := l.dropped.Add(1)
	now := time.Now().UnixNano()
	last := l.dropLogged.Load()
	if now-last < int64(dropLogEvery) || !l.dropLogged.CompareAndSwap(last, now) {
		return
	}
	l.logDrops(n)
}

// logDrops logs the drops counted since the last report, n in all.
func (l *Log) logDrops(n uint64) {
	if prev := l.dropReported.Swap(n); n > prev {
		l.log.Warn("event log: queue full (disk slow or failing): events dropped: not in the event log (the ring, metrics and alerts have them)",
			"path", l.path, "dropped", n-prev, "dropped_total", n)
	}
}

// Dropped returns how many events were not written because the queue was
// full or the log closed.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// WriteErrors returns how many events could not be written to the file.
func (l *Log) WriteErrors() uint64 { return l.failed.Load() }

// Close writes every queued event, then closes the file. Later Appends
// are dropped.
func (l *Log) Close() error {
	l.closing.Do(func() {
		l.mu.Lock()
		l.closed = true
		n := l.dropped.Load() // the queue's drops; those after Close are not news
		close(l.queue)
		l.mu.Unlock()
		l.logDrops(n)
	})
	<-l.done
	if err := l.f.Close(); err != nil && !errors.Is(err, fs.ErrClosed) {
		return fmt.Errorf("event log: %w", err)
	}
	return nil
}

// linger is the least time between two writes of the event log (see run).
const linger = time.Millisecond

// maxBatch bounds the bytes the writer gathers for one write(2): past it,
// the events still queued go into the next write.
const maxBatch = 256 << 10

// run is the writer: it takes the first event queued, then every other
// event already waiting (up to maxBatch bytes), and writes them all with
// one write(2) (two or more only where a rotation falls inside the batch).
// An idle daemon's event is written as soon as the writer wakes; a busy
// daemon's events share writes: group commit. An event that comes less
// than linger after the last write waits for the rest of it, so that
// under load the log takes at most 1,000 writes (and wake-ups of this
// goroutine) a second, as the daemon's text log does (internal/logbuf).
func (l *Log) run() {
	defer close(l.done)
	var (
		buf  []byte
		ends []int // the offset in buf just past each line's '\n'
	)
	add := func(e Event) {
		b, err := appendJSON(buf, e)
		if err != nil { // a time json.Marshal refuses too (year past 9999); never lose the writer to it
			l.failed.Add(1)
			return
		}
		buf, ends = b, append(ends, len(b))
	}
	failing := false
	var last time.Time // of the last write
	for e := range l.queue {
		if d := linger - time.Since(last); d > 0 {
			time.Sleep(d) // let more events join this batch
		}
		buf, ends = buf[:0], ends[:0]
		add(e)
	gather:
		for len(buf) < maxBatch {
			select {
			case e, ok := <-l.queue:
				if !ok {
					break gather
				}
				add(e)
			default:
				break gather
			}
		}
		lost, err := l.writeLines(buf, ends)
		last = time.Now()
		if err != nil {
			l.failed.Add(uint64(lost))
			if !failing { // log once per run of failures, not once per event
				l.log.Error("event log: write failed; events stay in memory only", "path", l.path, "error", err)
			}
			failing = true
			continue
		}
		if failing {
			l.log.Info("event log: writing again", "path", l.path, "lost", l.failed.Load())
		}
		failing = false
	}
}

// writeLines appends the lines of b (ends[i] is the offset just past line
// i's '\n') to the file in as few write(2)s as rotation allows: the lines
// that fit under MaxSize in one, then a rotation, then the next ones — the
// files end up exactly as if every line had been written on its own (a
// line never straddles two files; a line longer than MaxSize gets a file
// to itself). On an O_APPEND file a crash can cut a write short, at worst
// inside a line: what is on disk is always a prefix of the lines, so a
// crash tears at most the last line.
//
// It returns how many lines were not written and the first error. A
// failed rotation fails the rest of the batch (the next batch tries
// again); a failed write, the lines it did not complete.
func (l *Log) writeLines(b []byte, ends []int) (lost int, err error) {
	start := 0
	if l.reopen {
		if err := l.reopenCurrent(); err != nil {
			return len(ends), err
		}
	}
	for i := 0; i < len(ends); {
		if l.size > 0 && l.size+int64(ends[i]-start) > l.opts.MaxSize {
			if err := l.rotate(); err != nil {
				return len(ends) - i, err
			}
		}
		j := i + 1 // lines i…j-1 go into this write: at least one, as many as fit
		for j < len(ends) && l.size+int64(ends[j]-start) <= l.opts.MaxSize {
			j++
		}
		chunk := b[start:ends[j-1]]
		if l.torn {
			if err := l.endTornLine(); err != nil {
				return len(ends) - i, err
			}
		}
		n, werr := l.f.Write(chunk)
		l.size += int64(n)
		if werr != nil {
			if n > 0 && chunk[n-1] != '\n' {
				l.torn = true // e.g. ENOSPC mid-line: the next write starts a line of its own
			}
			done := i
			for done < j && ends[done] <= start+n {
				done++
			}
			return len(ends) - done, fmt.Errorf("event log %s: %w", l.path, werr)
		}
		start, i = ends[j-1], j
	}
	return 0, nil
}

// endTornLine ends the file's last line, which a crash or a short write
// left without its '\n', so that the next event starts a line of its own
// (Tail skips the torn one).
func (l *Log) endTornLine() error {
	n, err := l.f.Write([]byte{'\n'})
	l.size += int64(n)
	if err != nil {
		return fmt.Errorf("event log %s: ending a torn line: %w", l.path, err)
	}
	l.torn = false
	return nil
}

func (l *Log) rotated(i int) string { return l.path + "." + strconv.Itoa(i) }

// rotate shifts PATH.i to PATH.i+1 (dropping PATH.Keep), PATH to PATH.1,
// and reopens PATH empty. When the renames worked but the reopen failed
// (EMFILE, a full disk's inode table…), the rotation is done: the next
// write retries the open only (reopenCurrent), instead of rotating again
// — which would shift the rotated files once per batch and, after Keep
// batches, delete them all.
func (l *Log) rotate() error {
	l.rotating.Lock()
	defer l.rotating.Unlock()
	if err := l.f.Close(); err != nil {
		l.log.Warn("event log: close before rotation", "path", l.path, "error", err)
	}
	if err := os.Remove(l.rotated(l.opts.Keep)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		l.log.Warn("event log: rotation", "error", err)
	}
	for i := l.opts.Keep - 1; i >= 1; i-- {
		if err := os.Rename(l.rotated(i), l.rotated(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			l.log.Warn("event log: rotation", "error", err)
		}
	}
	if err := os.Rename(l.path, l.rotated(1)); err != nil {
		l.log.Warn("event log: rotation", "error", err)
	}
	if err := l.open(); err != nil {
		// Keep a closed handle (Close expects one) rather than a nil
		// file; nothing writes to it: reopen comes first.
		l.reopen = true
		return err
	}
	return nil
}

// reopenCurrent opens PATH again after a rotation failed to. The writer
// (run) logs the error once per run of failures.
func (l *Log) reopenCurrent() error {
	if err := l.open(); err != nil {
		return err
	}
	l.reopen = false
	l.log.Info("event log: reopened after a failed rotation", "path", l.path)
	return nil
}
