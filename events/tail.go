package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
)

// Tail returns the last n valid events of the log (the current file, then
// the rotated ones as needed), oldest first. Lines that are not valid
// events — a line torn by a crash, damage — are skipped and logged, never
// an error; a missing file is an empty log.
func (l *Log) Tail(n int) ([]Event, error) {
	return readTail(l.path, l.opts.Keep, n, l.log)
}

// readTail is Log.Tail for a log that is not open: the last n valid events
// of the file at path and its rotated files path.1 … path.keep, oldest
// first. log (may be nil) hears about skipped lines.
func readTail(path string, keep, n int, log *slog.Logger) ([]Event, error) {
	if log == nil {
		log = slog.Default()
	}
	var rev []Event // newest first
	skipped := 0
	for i := 0; i <= keep && len(rev) < n; i++ {
		name := path
		if i > 0 {
			name = path + "." + strconv.Itoa(i)
		}
		err := eachLineBackwards(name, func(line []byte) bool {
			var e Event
			if err := json.Unmarshal(line, &e); err != nil || e.Kind == "" || e.Time.IsZero() {
				skipped++
				return true
			}
			rev = append(rev, e)
			return len(rev) < n
		})
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return reverse(rev), err
		}
	}
	if skipped > 0 {
		log.Warn("event log: skipped lines that are not valid events (e.g. torn by a crash)", "path", path, "skipped", skipped)
	}
	return reverse(rev), nil
}

func reverse(evs []Event) []Event {
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return evs
}

// eachLineBackwards calls f with every non-empty line of the file, last
// line first, reading the file from its end in blocks, until f returns
// false. Lines longer than maxLine are skipped.
func eachLineBackwards(name string, f func(line []byte) bool) error {
	file, err := os.Open(name)
	if err != nil {
		return err
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return err
	}
	return linesBackwards(file, st.Size(), false, f)
}

// linesBackwards is eachLineBackwards for the first size bytes of an open
// file. With partialTail, what follows the last '\n' is not a line but
// one being written (the file is the log's current one): it is left out.
// A line passed to f is only valid during the call.
func linesBackwards(file *os.File, size int64, partialTail bool, f func(line []byte) bool) error {
	const block = 64 << 10
	pos := size
	var carry []byte // the start of the file's unread part up to its first '\n' seen so far
	skipping := partialTail
	var spare []byte // two buffers taking turns: carry is in the one not read into
	for pos > 0 {
		step := min(int64(block), pos)
		pos -= step
		if cap(spare) < int(step)+len(carry) {
			spare = make([]byte, 0, max(2*block, int(step)+len(carry)))
		}
		buf := spare[:step]
		if _, err := file.ReadAt(buf, pos); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("event log %s: %w", file.Name(), err)
		}
		buf = append(buf, carry...)
		spare = carry[:0:cap(carry)] // the buffer read into the last time, free once carry is copied
		if carry == nil {
			spare = nil
		}
		for {
			i := bytes.LastIndexByte(buf, '\n')
			if i < 0 {
				break
			}
			line := buf[i+1:]
			buf = buf[:i]
			if skipping {
				skipping = false
				continue
			}
			if len(line) > 0 && !f(line) {
				return nil
			}
		}
		carry = buf
		if len(carry) > maxLine {
			carry, skipping = nil, true
		}
	}
	if len(carry) > 0 && !skipping {
		f(carry)
	}
	return nil
}

// Attach loads the last events of the log back into r (as many as r keeps)
// and subscribes the log to r, so that every later event is written. Call
// it once, before anything is published on r. Damaged lines are skipped,
// not an error; an I/O error reading the files back is returned, but only
// after what could be read was restored and the log subscribed, so the
// daemon can log it and go on.
func (l *Log) Attach(r *Ring) error {
	evs, err := l.Tail(r.Cap())
	r.restore(evs)
	r.Subscribe(l.Append)
	r.mu.Lock()
	r.log = l // Scan reads the period's events from the files
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("event log: reading back: %w", err)
	}
	return nil
}
