package alert

import (
	"context"
	"errors"
	"sync"
	"time"
)

// sink is one destination (mail or webhook) with the alerts waiting for
// it. Deliveries run in the sink's own goroutine, so a hanging relay
// delays neither Notify nor the other sink.
type sink struct {
	name string
	send func(ctx context.Context, alerts []Alert) error

	mu      sync.Mutex
	pending []Alert
	wake    chan struct{}
}

func (s *sink) init() { s.wake = make(chan struct{}, 1) }

// add queues alerts for the next delivery, dropping the oldest beyond
// maxPending (a relay that has been down for days).
func (s *sink) add(alerts []Alert, a *Notifier) {
	s.mu.Lock()
	s.pending = append(s.pending, alerts...)
	if n := len(s.pending) - maxPending; n > 0 {
		s.pending = append([]Alert(nil), s.pending[n:]...)
		a.dropped.Add(uint64(n))
		a.log.Warn("alert backlog full: oldest alerts dropped", "sink", s.name, "dropped", n)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *sink) take() []Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending = nil
	return p
}

// putBack returns alerts that failed to the front of the queue, so the
// next attempt sends them with whatever arrived meanwhile, in order.
func (s *sink) putBack(alerts []Alert, a *Notifier) {
	s.mu.Lock()
	more := s.pending
	s.pending = nil
	s.mu.Unlock()
	s.add(append(alerts, more...), a)
}

// permanentError marks a failure that retrying cannot fix (the webhook
// answered 4xx): the digest is dropped.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func (a *Notifier) runSink(ctx context.Context, quit <-chan struct{}, s *sink) {
	backoff := a.cfg.MinBackoff
	for {
		select {
		case <-quit:
			// One last short attempt, so a shutdown right after an event
			// does not swallow its alert.
			if p := s.take(); len(p) > 0 {
				fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(a.cfg.Timeout, shutdownTimeout))
				if err := s.send(fctx, p); err != nil {
					a.failed.Add(1)
					a.log.Error("alert not delivered at shutdown", "sink", s.name, "alerts", len(p), "error", err)
				} else {
					a.sent.Add(1)
				}
				cancel()
			}
			return
		case <-s.wake:
		}
		if ctx.Err() != nil {
			continue // shutting down: the last attempt follows quit
		}
		p := s.take()
		if len(p) == 0 {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
		err := s.send(actx, p)
		cancel()
		if err == nil {
			a.sent.Add(1)
			a.log.Info("alert sent", "sink", s.name, "alerts", len(p))
			backoff = a.cfg.MinBackoff
			continue
		}
		a.failed.Add(1)
		var perm permanentError
		if errors.As(err, &perm) {
			a.log.Error("alert rejected; not retried", "sink", s.name, "alerts", len(p), "error", err)
			continue
		}
		a.log.Warn("alert delivery failed; will retry", "sink", s.name, "alerts", len(p), "retry_in", backoff, "error", err)
		s.putBack(p, a)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-quit:
			t.Stop()
		case <-t.C:
		}
		backoff = min(2*backoff, a.cfg.MaxBackoff)
	}
}
