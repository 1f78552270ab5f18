package fleet

import (
	"sync"
	"sync/atomic"
)

// op is one pending write: a record or an event.
type op struct {
	rec   *Record
	event []byte // an encoded event for the stream
}

// queue is a bounded FIFO of pending writes; pushing into a full queue
// drops the oldest write, so a long outage keeps the newest facts.
type queue struct {
	mu      sync.Mutex
	buf     []op
	max     int
	wake    chan struct{}
	dropped atomic.Uint64
}

func newQueue(max int) *queue {
	return &queue{max: max, wake: make(chan struct{}, 1)}
}

func (q *queue) push(o op) {
	q.mu.Lock()
	if len(q.buf) >= q.max {
		q.buf = q.buf[1:]
		q.dropped.Add(1)
	}
	q.buf = append(q.buf, o)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take removes up to n writes from the front.
func (q *queue) take(n int) []op {
	q.mu.Lock()
	defer q.mu.Unlock()
	n = min(n, len(q.buf))
	out := make([]op, n)
	copy(out, q.buf)
	q.buf = q.buf[n:]
	return out
}

// putBack returns writes that failed to the front, within the bound.
func (q *queue) putBack(ops []op) {
	q.mu.Lock()
	defer q.mu.Unlock()
	room := q.max - len(q.buf)
	if room <= 0 {
		q.dropped.Add(uint64(len(ops)))
		return
	}
	if len(ops) > room {
		q.dropped.Add(uint64(len(ops) - room))
		ops = ops[len(ops)-room:]
	}
	q.buf = append(append(make([]op, 0, len(ops)+len(q.buf)), ops...), q.buf...)
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.buf)
}
