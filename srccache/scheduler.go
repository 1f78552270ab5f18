package srccache

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Scheduler defaults.
const (
	DefaultSaveEvery = 10 * time.Second
	DefaultWorkers   = 4
	DefaultLease     = 10 * time.Minute
	DefaultMaxQueue  = 10000
	// maxSleep bounds the scheduler's wait, so that a clock change or a
	// missed wake-up delays a refresh by a minute at most.
	maxSleep = time.Minute
)

// Handler refreshes one record: key is the record's key, r the record due
// (nil for a key Queue'd without one). It writes what it found (Put,
// Reschedule or Delete); a record it leaves alone is due again after its
// kind's Lease. It must return when ctx is done.
type Handler func(ctx context.Context, key string, r *Record)

// KindOptions configure the handling of one kind of record.
type KindOptions struct {
	// Workers is how many handlers of this kind run at once at most
	// (DefaultWorkers if 0).
	Workers int
	// Lease: a dispatched record's Refresh moves this far ahead until its
	// handler writes it (DefaultLease if 0), so it is not dispatched twice.
	Lease time.Duration
	// MaxQueue bounds the keys waiting in Queue (DefaultMaxQueue if 0).
	MaxQueue int
	// PerMinute caps the handlers of this kind started in any minute
	// (0: no cap).
	PerMinute int
}

// SchedulerOptions configure a Scheduler.
type SchedulerOptions struct {
	Logger *slog.Logger
	// SaveEvery is how often a changed cache is saved (DefaultSaveEvery
	// if 0); Run saves once more when it returns.
	SaveEvery time.Duration
	Now       func() time.Time // the clock (time.Now if nil)
}

// Scheduler is the one refresh scheduler of the cache: it walks each
// handled kind's refresh index and runs the kind's Handler for the records
// due, and for the keys Queue'd (first), within the kind's Workers and
// PerMinute, and saves the cache. Records of kinds nobody Handles are
// never dispatched.
type Scheduler struct {
	c     *Cache
	opts  SchedulerOptions
	log   *slog.Logger
	kinds []*kindState
	byKey map[Kind]*kindState
	ticks []func()
	wake  chan struct{}
	wg    sync.WaitGroup
}

type kindState struct {
	kind    Kind
	o       KindOptions
	h       Handler
	dropped atomic.Uint64

	mu       sync.Mutex
	queue    []string
	queued   map[string]bool // in queue
	inflight map[string]bool // a handler runs for it
	starts   []time.Time     // handler starts within the last minute (PerMinute)
}

// NewScheduler returns a scheduler for c. Register kinds with Handle, then
// call Run.
func NewScheduler(c *Cache, o SchedulerOptions) *Scheduler {
	if o.SaveEvery <= 0 {
		o.SaveEvery = DefaultSaveEvery
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{c: c, opts: o, log: log, byKey: map[Kind]*kindState{}, wake: make(chan struct{}, 1)}
}

// Handle registers kind's handler. Call it before Run.
func (s *Scheduler) Handle(kind Kind, o KindOptions, h Handler) {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = DefaultMaxQueue
	}
	k := &kindState{kind: kind, o: o, h: h, queued: map[string]bool{}, inflight: map[string]bool{}}
	s.kinds = append(s.kinds, k)
	s.byKey[kind] = k
}

// Tick registers f to run on the scheduler's goroutine every SaveEvery
// (housekeeping such as sweeping lookup times); it must not block long.
// Call it before Run.
func (s *Scheduler) Tick(f func()) { s.ticks = append(s.ticks, f) }

// Handles reports whether kind has a handler.
func (s *Scheduler) Handles(kind Kind) bool { return s.byKey[kind] != nil }

// Queue asks for key of kind to be handled soon, before the kind's due
// records. It never blocks. It returns false when key is already queued or
// being handled, when kind has no handler, or when the queue is full (the
// key is dropped and counted: Dropped).
func (s *Scheduler) Queue(kind Kind, key string) bool {
	k := s.byKey[kind]
	if k == nil {
		return false
	}
	k.mu.Lock()
	switch {
	case k.queued[key] || k.inflight[key]:
		k.mu.Unlock()
		return false
	case len(k.queue) >= k.o.MaxQueue:
		k.mu.Unlock()
		k.dropped.Add(1)
		return false
	}
	k.queued[key] = true
	k.queue = append(k.queue, key)
	k.mu.Unlock()
	s.poke()
	return true
}

// Dropped returns how many keys of kind Queue dropped on a full queue.
func (s *Scheduler) Dropped(kind Kind) uint64 {
	if k := s.byKey[kind]; k != nil {
		return k.dropped.Load()
	}
	return 0
}

// Queued returns how many keys of kind wait in the queue.
func (s *Scheduler) Queued(kind Kind) int {
	k := s.byKey[kind]
	if k == nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.queue)
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run dispatches until ctx is done, then waits for the handlers running
// and saves the cache if it changed.
func (s *Scheduler) Run(ctx context.Context) error {
	save := time.NewTicker(s.opts.SaveEvery)
	defer save.Stop()
	for {
		now := s.opts.Now()
		wait := maxSleep
		for _, k := range s.kinds {
			if d := s.dispatch(ctx, k, now); d < wait {
				wait = d
			}
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			s.wg.Wait()
			return s.save()
		case <-t.C:
		case <-s.wake:
			t.Stop()
		case <-s.c.Wake():
			t.Stop()
		case <-save.C:
			t.Stop()
			for _, f := range s.ticks {
				f()
			}
			if err := s.save(); err != nil {
				s.log.Warn("saving the cache", "error", err)
			}
		}
	}
}

func (s *Scheduler) save() error {
	if !s.c.Changed() {
		return nil
	}
	return s.c.Save()
}

// dispatch starts kind's handlers for its queued keys, then its due
// records, within its limits, and returns how long Run may sleep before
// kind needs it again (maxSleep at most).
func (s *Scheduler) dispatch(ctx context.Context, k *kindState, now time.Time) time.Duration {
	k.mu.Lock()
	free := k.o.Workers - len(k.inflight)
	if k.o.PerMinute > 0 {
		cut := 0
		for cut < len(k.starts) && now.Sub(k.starts[cut]) >= time.Minute {
			cut++
		}
		k.starts = k.starts[cut:]
		if room := k.o.PerMinute - len(k.starts); room < free {
			free = room
		}
	}
	for free > 0 && len(k.queue) > 0 && ctx.Err() == nil {
		key := k.queue[0]
		k.queue[0] = ""
		k.queue = k.queue[1:]
		delete(k.queued, key)
		r := s.c.Get(k.kind, key)
		if r != nil {
			_ = s.c.Reschedule(r, now.Add(k.o.Lease))
		}
		s.startLocked(ctx, k, key, r, now)
		free--
	}
	var next time.Time
	if free > 0 && ctx.Err() == nil {
		var due []*Record
		due, next = s.c.DueKind(k.kind, now, free+len(k.inflight))
		for _, r := range due {
			if k.inflight[r.Domain] { // its handler still runs, past its lease
				_ = s.c.Reschedule(r, now.Add(k.o.Lease))
				continue
			}
			if free == 0 {
				break
			}
			_ = s.c.Reschedule(r, now.Add(k.o.Lease))
			s.startLocked(ctx, k, r.Domain, r, now)
			free--
		}
		if free == 0 {
			next = time.Time{}
		}
	}
	wait := maxSleep
	switch {
	case free <= 0 && k.o.PerMinute > 0 && len(k.starts) >= k.o.PerMinute:
		wait = k.starts[0].Add(time.Minute).Sub(now) // a handler ending wakes Run too
	case free <= 0:
		// a handler ending wakes Run
	case len(k.queue) > 0:
		wait = 0
	case !next.IsZero():
		wait = next.Sub(now)
	}
	k.mu.Unlock()
	return min(wait, maxSleep)
}

// startLocked runs k's handler for key on a goroutine of its own; k.mu is
// held.
func (s *Scheduler) startLocked(ctx context.Context, k *kindState, key string, r *Record, now time.Time) {
	k.inflight[key] = true
	if k.o.PerMinute > 0 {
		k.starts = append(k.starts, now)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			k.mu.Lock()
			delete(k.inflight, key)
			k.mu.Unlock()
			s.poke()
		}()
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("cache refresh handler panicked", "kind", k.kind, "key", key, "panic", p)
			}
		}()
		k.h(ctx, key, r)
	}()
}
