package probe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultMaxPerMinute is the default of Config.MaxPerMinute.
const DefaultMaxPerMinute = 120

// ErrRateLimited is wrapped by the error of a Probe whose caller's context
// ended, or would end, before the probe's turn under Config.MaxPerMinute.
var ErrRateLimited = errors.New("probe rate limit reached")

// startWindow lets at most n probes start within any window (a minute):
// a ring of the last n start times, handed out in order. A probe's turn
// is when the n-th start before it is a window old.
type startWindow struct {
	n      int
	window time.Duration

	mu     sync.Mutex
	starts []time.Time // ring: starts[next] is the oldest of the last n
	next   int
}

func newStartWindow(n int, window time.Duration) *startWindow {
	return &startWindow{n: n, window: window, starts: make([]time.Time, n)}
}

// wait blocks until the caller may start a probe and records the start.
// When ctx has a deadline before the caller's turn it fails at once,
// without using a turn; when ctx ends while waiting, the turn is lost (a
// lost turn only ever makes the limit stricter).
func (w *startWindow) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w (%d per %v): %w", ErrRateLimited, w.n, w.window, err)
	}
	now := time.Now()
	w.mu.Lock()
	at := w.starts[w.next].Add(w.window)
	if at.Before(now) {
		at = now
	}
	if dl, ok := ctx.Deadline(); ok && at.After(dl) {
		w.mu.Unlock()
		return fmt.Errorf("%w (%d per %v): next turn in %v, after the deadline",
			ErrRateLimited, w.n, w.window, at.Sub(now).Round(time.Millisecond))
	}
	w.starts[w.next] = at
	w.next = (w.next + 1) % w.n
	w.mu.Unlock()

	d := at.Sub(now)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w (%d per %v): %w", ErrRateLimited, w.n, w.window, ctx.Err())
	}
}
