// Package logfollow follows a log as it grows: a file across rotation by
// rename and by copytruncate, or the systemd journal through journalctl.
// Each complete line is handed over with the Position just past it, which
// the caller persists (with whatever it derived from the lines, so that a
// restart neither loses nor counts a line twice) and passes back as Start.
package logfollow

import (
	"context"
	"time"
)

// Position is where a follower is in its log: a file's inode and the
// offset just past the last line read (with up to tailLen bytes before the
// offset, to recognise the same file after copytruncate), or a journal
// cursor.
type Position struct {
	Inode  uint64 `json:"inode,omitempty"`
	Offset int64  `json:"offset,omitempty"`
	Tail   []byte `json:"tail,omitempty"`
	Cursor string `json:"cursor,omitempty"`
}

// Handler receives one line (without its newline) and the position past it.
type Handler func(line string, pos Position)

// Follower is a file or journal follower.
type Follower interface {
	// Run hands lines to h until ctx ends or the log cannot be read.
	Run(ctx context.Context, h Handler) error
}

// tailLen is how many bytes before the offset a Position keeps.
const tailLen = 64

// maxLine bounds a line: the rest of a longer one is skipped.
const maxLine = 64 << 10

// DefaultPoll is how often a file at its end is checked for growth and
// rotation.
const DefaultPoll = 250 * time.Millisecond

// sleep waits d or until ctx ends, reporting whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
