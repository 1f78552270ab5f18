package connserver

import (
	"context"
	"sync"
	"time"
)

// requestContext is the context.Context of one Session.Call. It exists because
// context.WithDeadline costs four allocations and a runtime timer per call,
// about as much as the rest of a request's user-space work; the connection
// already has a watchdog timer armed at the same deadline, so that timer
// cancels this context too, and the only allocation left is the struct
// itself (plus the Done channel if the Handler asks for it).
//
// It is never reused: a Handler may keep its context (e.g. in a goroutine it
// started), and must then see it cancelled, not revived by a later request.
type requestContext struct {
	deadline time.Time

	mu   sync.Mutex
	done chan struct{} // created on first Done call
	err  error
}

// closedChan is returned by Done once the context has ended, when no
// channel had been asked for before.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

var _ context.Context = (*requestContext)(nil)

// Deadline implements context.Context.
func (c *requestContext) Deadline() (time.Time, bool) { return c.deadline, true }

// Done implements context.Context.
func (c *requestContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.err != nil {
			return closedChan
		}
		c.done = make(chan struct{})
	}
	return c.done
}

// Err implements context.Context.
func (c *requestContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Value implements context.Context; the server's contexts carry no values.
func (c *requestContext) Value(any) any { return nil }

// String names the context in fmt output, as the context package does.
func (c *requestContext) String() string { return "connserver.requestContext" }

// cancel ends the context with err (context.DeadlineExceeded or
// context.Canceled); only the first call counts.
func (c *requestContext) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
}
