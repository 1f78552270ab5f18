package events

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// Coverage says where the events Scan visited came from and what of the
// period may be missing.
type Coverage struct {
	// FromLog is true when the event log's files were read (with the
	// ring's events not written yet); false when the ring alone was,
	// which keeps its latest RingCap events only: no event log is
	// attached, or its files could not be opened.
	FromLog bool
	// RingCap is how many events the ring keeps.
	RingCap int
	// RotatedBefore, when not zero, is the time of the oldest event still
	// known (on disk, or in the ring only): the period starts before it,
	// and the oldest rotated file (PATH.Keep) exists, so the events before
	// it were rotated away.
	RotatedBefore time.Time
}

// scanSlack is how far past the period's start Scan goes on reading the
// files before it stops: their lines are in the order the events were
// published, which is time order but for publishers racing each other.
const scanSlack = time.Minute

// Scan calls f with every event whose Time is not before since, roughly
// newest first, and says where they came from. With an event log
// attached (Log.Attach) those are the events of its files, the current
// one and the rotated ones, read from the newest back to since (bounded
// work: the files hold at most (1+Keep)×MaxSize bytes), and then the
// events of the ring that are not in the files: queued for the writer,
// dropped or lost to a write error. Without one, they are the ring's,
// which are the latest Cap events only.
//
// An error reading the files is returned with what could be visited: the
// events read before it and the ring's that were not among them.
func (r *Ring) Scan(since time.Time, f func(Event)) (Coverage, error) {
	r.mu.Lock()
	l := r.log
	r.mu.Unlock()
	recent := r.Since(since) // before the files: an event published meanwhile is in one of them, or in neither
	cov := Coverage{RingCap: r.Cap()}
	if l == nil {
		for _, e := range recent {
			f(e)
		}
		return cov, nil
	}
	return l.scan(since, recent, cov, f)
}

// logFile is one of the log's files, open for Scan.
type logFile struct {
	f       *os.File
	size    int64 // read up to here: the current file grows while it is read
	current bool  // PATH, whose last line may be being written
}

// openFiles opens the current file and the rotated ones, newest first,
// under the rotation lock: a rotation cannot rename a file between two
// opens, so each is seen once. full says PATH.Keep is among them.
func (l *Log) openFiles() (files []logFile, full bool, err error) {
	l.rotating.Lock()
	defer l.rotating.Unlock()
	for i := 0; i <= l.opts.Keep; i++ {
		name := l.path
		if i > 0 {
			name = l.rotated(i)
		}
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		var st os.FileInfo
		if err == nil {
			if st, err = f.Stat(); err != nil {
				f.Close()
			}
		}
		if err != nil {
			closeFiles(files)
			return nil, false, fmt.Errorf("event log: %w", err)
		}
		files = append(files, logFile{f, st.Size(), i == 0})
		full = i == l.opts.Keep
	}
	return files, full, nil
}

func closeFiles(files []logFile) {
	for _, lf := range files {
		lf.f.Close()
	}
}

// scan is Ring.Scan for a ring with the log attached; recent are the
// ring's events of the period, newest first.
func (l *Log) scan(since time.Time, recent []Event, cov Coverage, f func(Event)) (Coverage, error) {
	// The ring's events not (yet) found in the files, compared as they
	// read back from them.
	unseen := make(map[Event]int, len(recent))
	for _, e := range recent {
		unseen[canon(e)]++
	}
	cov, err := l.scanFiles(since, unseen, cov, f)
	for _, e := range recent {
		if k := canon(e); unseen[k] > 0 {
			unseen[k]--
			f(e)
			if e.Time.Before(cov.RotatedBefore) { // rotated away, still in the ring
				cov.RotatedBefore = e.Time
			}
		}
	}
	return cov, err
}

// scanFiles visits the files' events of the period, crossing those it
// finds off unseen.
func (l *Log) scanFiles(since time.Time, unseen map[Event]int, cov Coverage, f func(Event)) (Coverage, error) {
	files, full, err := l.openFiles()
	if err != nil {
		return cov, err // the ring's events, as without a log
	}
	defer closeFiles(files)
	cov.FromLog = true
	stop := since.Add(-scanSlack)
	var oldest time.Time // of the events read
	reached := false     // an event before since was read: the files cover the period
	done := false        // an event before stop was read: the rest is older
	skipped := 0
	for _, lf := range files {
		err := linesBackwards(lf.f, lf.size, lf.current, func(line []byte) bool {
			e, ok := decodeLine(line)
			if !ok {
				skipped++
				return true
			}
			if oldest.IsZero() || e.Time.Before(oldest) {
				oldest = e.Time
			}
			if e.Time.Before(since) {
				reached, done = true, e.Time.Before(stop)
				return !done
			}
			if k := canon(e); unseen[k] > 0 {
				unseen[k]--
			}
			f(e)
			return true
		})
		if err != nil {
			return cov, err
		}
		if done {
			break
		}
	}
	if skipped > 0 {
		l.log.Debug("event log: lines that are not valid events skipped while counting", "path", l.path, "skipped", skipped)
	}
	if !reached && full && !oldest.IsZero() {
		cov.RotatedBefore = oldest
	}
	return cov, nil
}

// canon returns e as it reads back from the event log, so that an event
// of the ring and its line in a file compare equal (==): the time in UTC
// without its monotonic clock reading, the strings valid UTF-8 as
// encoding/json makes them (each invalid byte a U+FFFD).
func canon(e Event) Event {
	e.Time = e.Time.Round(0).UTC()
	e.Kind = Kind(validUTF8(string(e.Kind)))
	for _, s := range []*string{&e.Domain, &e.Rule, &e.Source, &e.Action, &e.Reason, &e.Client, &e.Sender} {
		*s = validUTF8(*s)
	}
	return e
}

// validUTF8 replaces each byte of s that is not valid UTF-8 by U+FFFD, as
// encoding/json does (strings.ToValidUTF8 would replace a run of them by
// one).
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s { // an invalid byte ranges as utf8.RuneError, one byte wide
		b.WriteRune(r)
	}
	return b.String()
}
