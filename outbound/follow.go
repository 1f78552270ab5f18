package outbound

import (
	"context"
	"time"

	"github.com/tlspolicyd/tlspolicyd/logfollow"
	"github.com/tlspolicyd/tlspolicyd/maillog"
)

// Handler returns the logfollow.Handler that parses each line (journalctl
// JSON records when journal is set, else syslog lines whose stamps without
// a zone are in loc), correlates it and observes the result.
func (t *Tracker) Handler(journal bool, loc *time.Location) logfollow.Handler {
	return func(text string, pos logfollow.Position) {
		var l maillog.Line
		var ok bool
		if journal {
			l, _, ok, _ = maillog.ParseJournal([]byte(text))
		} else {
			l, ok = maillog.ParseSyslog(text, t.cfg.Now(), loc)
		}
		t.Observe(l, ok, pos)
	}
}

// Follow runs f into the tracker, saving the state to path (if not "")
// every saveEvery and when ctx ends.
func (t *Tracker) Follow(ctx context.Context, f logfollow.Follower, journal bool, path string, saveEvery time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if path == "" {
			return
		}
		tick := time.NewTicker(saveEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := t.Save(path); err != nil {
					t.log.Warn("saving the outbound state", "path", path, "error", err)
				}
			}
		}
	}()
	err := f.Run(ctx, t.Handler(journal, time.Local))
	cancel()
	<-done
	if path != "" {
		if serr := t.Save(path); serr != nil {
			t.log.Warn("saving the outbound state", "path", path, "error", serr)
		}
	}
	return err
}
