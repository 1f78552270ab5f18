package logfollow

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// File follows a log file such as /var/log/mail.log. A rotation by rename
// (logrotate's create, Postfix's `postfix logrotate`) is noticed when the
// path names another inode: the old file is read to its end, then the new
// one from its start. A truncation in place (copytruncate) is noticed when
// the bytes before the offset changed: the rest of the old content is read
// from the rotated copy (PATH.1, PATH-*), then the file from its start.
type File struct {
	Path string
	// Start is where to resume; nil starts at the end of the file (or at
	// the start of a file that does not exist yet).
	Start *Position
	// Poll is how often the file is checked at its end (DefaultPoll).
	Poll   time.Duration
	Logger *slog.Logger
}

// reader reads one open file from off, handing over complete lines.
type reader struct {
	f        *os.File
	inode    uint64
	off      int64 // just past the last complete line handed over
	tail     []byte
	partial  []byte // bytes after off, no newline yet
	skipping bool   // inside an over-long line, discarding it
	rpos     int64  // next byte to read
}

func newReader(f *os.File, inode uint64, off int64, tail []byte) *reader {
	return &reader{f: f, inode: inode, off: off, rpos: off, tail: append([]byte(nil), tail...)}
}

func (r *reader) pos() Position {
	return Position{Inode: r.inode, Offset: r.off, Tail: append([]byte(nil), r.tail...)}
}

// readAll hands over every complete line up to the end of the file.
func (r *reader) readAll(ctx context.Context, h Handler) error {
	buf := make([]byte, 32<<10)
	for ctx.Err() == nil {
		n, err := r.f.ReadAt(buf, r.rpos)
		data := buf[:n]
		r.rpos += int64(n)
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				if !r.skipping {
					r.partial = append(r.partial, data...)
					if len(r.partial) > maxLine {
						r.partial, r.skipping = r.partial[:0], true
					}
				}
				break
			}
			line := data[:i]
			if len(r.partial) > 0 {
				line = append(r.partial, line...)
			}
			end := r.rpos - int64(len(data)) + int64(i) + 1
			r.advance(line, end)
			if !r.skipping {
				h(string(line), r.pos())
			}
			r.partial, r.skipping = r.partial[:0], false
			data = data[i+1:]
		}
		if errors.Is(err, io.EOF) || n == 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

// advance moves off to end past line, keeping the last tailLen bytes.
func (r *reader) advance(line []byte, end int64) {
	r.off = end
	t := append(append(r.tail, line...), '\n')
	if len(t) > tailLen {
		t = t[len(t)-tailLen:]
	}
	r.tail = append(r.tail[:0:0], t...)
}

// intact reports whether the file still holds, just before off, the bytes
// read there: false after a truncation (even one the file has regrown past).
func (r *reader) intact() bool {
	return tailMatches(r.f, r.off, r.tail)
}

func tailMatches(f *os.File, off int64, tail []byte) bool {
	if off == 0 {
		return true
	}
	st, err := f.Stat()
	if err != nil || st.Size() < off {
		return false
	}
	if int64(len(tail)) > off {
		return false
	}
	got := make([]byte, len(tail))
	if _, err := f.ReadAt(got, off-int64(len(tail))); err != nil {
		return false
	}
	return bytes.Equal(got, tail)
}

func inodeOf(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// Run follows the file until ctx ends (it then returns nil).
func (fl *File) Run(ctx context.Context, h Handler) error {
	log := fl.Logger
	if log == nil {
		log = slog.Default()
	}
	poll := fl.Poll
	if poll <= 0 {
		poll = DefaultPoll
	}
	r, err := fl.start(ctx, h, log, poll)
	if r == nil {
		return err
	}
	defer func() { r.f.Close() }()
	for {
		if err := r.readAll(ctx, h); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !sleep(ctx, poll) {
			return nil
		}
		fi, err := os.Stat(fl.Path)
		if err != nil {
			continue // renamed away, the new file not there yet
		}
		if ino := inodeOf(fi); ino != r.inode {
			// Rotated by rename. The writer may still append to the old
			// file until it reopens: switch once the new one has data.
			if fi.Size() == 0 {
				continue
			}
			if err := r.readAll(ctx, h); err != nil && ctx.Err() == nil {
				log.Warn("maillog: reading the rotated file", "path", fl.Path, "error", err)
			}
			nf, err := os.Open(fl.Path)
			if err != nil {
				continue
			}
			nfi, err := nf.Stat()
			if err != nil {
				nf.Close()
				continue
			}
			r.f.Close()
			r = newReader(nf, inodeOf(nfi), 0, nil)
			log.Info("maillog: following the new file after rotation", "path", fl.Path)
			continue
		}
		if !r.intact() {
			fl.readCopy(ctx, r.off, r.tail, h, log)
			r = newReader(r.f, r.inode, 0, nil)
			log.Info("maillog: file truncated (copytruncate); reading it from the start", "path", fl.Path)
		}
	}
}

// start opens the file at the position to resume from.
func (fl *File) start(ctx context.Context, h Handler, log *slog.Logger, poll time.Duration) (*reader, error) {
	for {
		f, err := os.Open(fl.Path)
		if err == nil {
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, err
			}
			ino := inodeOf(fi)
			switch s := fl.Start; {
			case s == nil:
				// First run: only what Postfix logs from now on.
				r := newReader(f, ino, fi.Size(), nil)
				r.tail = lastBytes(f, fi.Size())
				return r, nil
			case s.Inode == 0 && s.Offset == 0:
				// A file created after the follower started: all of it.
			case s.Inode == ino && tailMatches(f, s.Offset, s.Tail):
				return newReader(f, ino, s.Offset, s.Tail), nil
			case s.Inode == ino:
				log.Warn("maillog: file truncated while the daemon was stopped; reading it from the start", "path", fl.Path)
				fl.readCopy(ctx, s.Offset, s.Tail, h, log)
			default:
				// Rotated while stopped: finish the old file first.
				if old := fl.findInode(s.Inode); old != "" {
					fl.readRest(ctx, old, s.Offset, s.Tail, h, log)
				} else {
					log.Warn("maillog: the file read before the restart is gone; lines logged to it since are not counted", "path", fl.Path)
				}
			}
			return newReader(f, ino, 0, nil), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if !sleep(ctx, poll) {
			return nil, nil
		}
		if fl.Start == nil {
			fl.Start = &Position{} // created after we started: read it whole
		}
	}
}

func lastBytes(f *os.File, size int64) []byte {
	n := min(size, tailLen)
	b := make([]byte, n)
	if _, err := f.ReadAt(b, size-n); err != nil {
		return nil
	}
	return b
}

// rotated lists the files a rotation may have left the old content in,
// newest first: PATH.0, PATH.1, PATH-* (dateext), not compressed ones.
func (fl *File) rotated() []string {
	var names []string
	for _, n := range []string{fl.Path + ".0", fl.Path + ".1"} {
		if _, err := os.Stat(n); err == nil {
			names = append(names, n)
		}
	}
	if more, err := filepath.Glob(fl.Path + "-*"); err == nil {
		for _, n := range more {
			if !strings.HasSuffix(n, ".gz") && !strings.HasSuffix(n, ".xz") && !strings.HasSuffix(n, ".bz2") && !strings.HasSuffix(n, ".zst") {
				names = append(names, n)
			}
		}
	}
	mtime := func(n string) time.Time {
		fi, err := os.Stat(n)
		if err != nil {
			return time.Time{}
		}
		return fi.ModTime()
	}
	sort.SliceStable(names, func(i, j int) bool { return mtime(names[i]).After(mtime(names[j])) })
	return names
}

func (fl *File) findInode(ino uint64) string {
	for _, n := range fl.rotated() {
		if fi, err := os.Stat(n); err == nil && inodeOf(fi) == ino {
			return n
		}
	}
	return ""
}

// readCopy reads, after a copytruncate, what the copy holds past off: the
// lines logged between the last read and the truncation.
func (fl *File) readCopy(ctx context.Context, off int64, tail []byte, h Handler, log *slog.Logger) {
	for _, n := range fl.rotated() {
		f, err := os.Open(n)
		if err != nil {
			continue
		}
		ok := tailMatches(f, off, tail)
		f.Close()
		if ok {
			fl.readRest(ctx, n, off, tail, h, log)
			return
		}
	}
}

// readRest hands over the lines of name past off (a rotated file).
func (fl *File) readRest(ctx context.Context, name string, off int64, tail []byte, h Handler, log *slog.Logger) {
	f, err := os.Open(name)
	if err != nil {
		log.Warn("maillog: cannot read the rotated file", "path", name, "error", err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !tailMatches(f, off, tail) {
		return
	}
	r := newReader(f, inodeOf(fi), off, tail)
	if err := r.readAll(ctx, h); err != nil && ctx.Err() == nil {
		log.Warn("maillog: reading the rotated file", "path", name, "error", err)
	}
}
