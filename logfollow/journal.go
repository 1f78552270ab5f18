package logfollow

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os/exec"
	"time"
)

// Journal follows the systemd journal with `journalctl -f -o json`,
// resuming after Start's cursor (or from the end when Start is nil). Lines
// are journalctl's JSON records; their __CURSOR is the Position.
type Journal struct {
	// Command is journalctl and its leading arguments (default
	// ["journalctl"]); tests put a fake in its place.
	Command []string
	// Matches select the records (default: the mail facility,
	// SYSLOG_FACILITY=2, which Postfix logs to).
	Matches []string
	Start   *Position
	Logger  *slog.Logger
	// Restart is the wait before journalctl is run again after it exited
	// (default 5s).
	Restart time.Duration
}

// Run follows the journal until ctx ends (it then returns nil).
func (j *Journal) Run(ctx context.Context, h Handler) error {
	log := j.Logger
	if log == nil {
		log = slog.Default()
	}
	wait := j.Restart
	if wait <= 0 {
		wait = 5 * time.Second
	}
	cursor := ""
	fromEnd := j.Start == nil || j.Start.Cursor == ""
	if !fromEnd {
		cursor = j.Start.Cursor
	}
	for {
		err := j.runOnce(ctx, cursor, fromEnd, func(line string, pos Position) {
			cursor, fromEnd = pos.Cursor, false
			h(line, pos)
		})
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return err // no journalctl: the caller says so and decides
		}
		log.Warn("maillog: journalctl stopped; running it again", "error", err, "retry_in", wait)
		if !sleep(ctx, wait) {
			return nil
		}
	}
}

func (j *Journal) runOnce(ctx context.Context, cursor string, fromEnd bool, h Handler) error {
	argv := j.Command
	if len(argv) == 0 {
		argv = []string{"journalctl"}
	}
	args := append(append([]string(nil), argv[1:]...), "-f", "-o", "json", "--no-pager")
	if fromEnd {
		args = append(args, "-n", "0")
	} else {
		args = append(args, "--after-cursor="+cursor)
	}
	matches := j.Matches
	if len(matches) == 0 {
		matches = []string{"SYSLOG_FACILITY=2"}
	}
	args = append(args, matches...)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", argv[0], err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 4*maxLine)
	for sc.Scan() {
		var rec struct {
			Cursor string `json:"__CURSOR"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Cursor == "" {
			continue
		}
		h(sc.Text(), Position{Cursor: rec.Cursor})
	}
	scanErr := sc.Err()
	cancel() // journalctl may still be writing after a scan error
	werr := cmd.Wait()
	if scanErr != nil {
		return scanErr
	}
	if werr == nil {
		werr = errors.New("exited")
	}
	return werr
}
