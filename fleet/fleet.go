package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Record is one fact a daemon shares: a learned policy, a probe result, an
// MTA-STS policy or a DANE result. Data is the owner's own encoding.
type Record struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key"`
	Node    string          `json:"node"`
	Expires time.Time       `json:"expires"`
	Data    json.RawMessage `json:"data"`
}

// ApplyFunc merges a record another node shared into local state. It is
// called from the fleet's goroutine and must not block.
type ApplyFunc func(Record)

// Stats are the link's counters, for metrics and the status page.
type Stats struct {
	Up          bool
	Since       time.Time // when the link last went up or down
	LastError   string
	Written     uint64 // records and events written to Redis
	Applied     uint64 // records from other nodes applied locally
	Dropped     uint64 // writes dropped from a full queue
	WriteErrors uint64
	Queued      int
}

// Fleet is the link to the shared cache. Publish, Claim and the readers
// are safe for concurrent use; Handle must be called before Run.
type Fleet struct {
	cfg Config
	log *slog.Logger
	rdb redis.UniversalClient
	// OnLink, when set before Run, hears every change of the link's state.
	OnLink func(up bool, err error)

	kinds   map[string]ApplyFunc
	q       *queue
	started time.Time // when New made the link: the heartbeat's Started

	mu        sync.Mutex
	up        bool
	since     time.Time
	lastError string

	written, applied, writeErrors atomic.Uint64
}

// New returns a fleet link for cfg; nothing connects before Run.
func New(cfg Config, log *slog.Logger) (*Fleet, error) {
	cfg.setDefaults()
	rdb, err := cfg.client()
	if err != nil {
		return nil, err
	}
	quietLibrary(log)
	return &Fleet{cfg: cfg, log: log, rdb: rdb, kinds: map[string]ApplyFunc{},
		q: newQueue(cfg.QueueSize), since: time.Now(), started: time.Now()}, nil
}

// Redacted is the shared cache's URL without its password, for logs.
func (f *Fleet) Redacted() string { return f.cfg.Redacted() }

// Node is this daemon's name in the fleet.
func (f *Fleet) Node() string { return f.cfg.Node }

// Handle registers how records of kind from other nodes are applied.
func (f *Fleet) Handle(kind string, apply ApplyFunc) { f.kinds[kind] = apply }

func (f *Fleet) prefix() string  { return "tlspolicyd:" + f.cfg.Cluster + ":" }
func (f *Fleet) channel() string { return f.prefix() + "changes" }
func (f *Fleet) recKey(kind, key string) string {
	return f.prefix() + "rec:" + kind + ":" + key
}

// Publish queues a local record for the fleet; it never blocks. A record
// already expired is not shared.
func (f *Fleet) Publish(r Record) {
	r.Node = f.cfg.Node
	if !r.Expires.After(time.Now()) {
		return
	}
	f.q.push(op{rec: &r})
}

// Stats returns the link's state and counters.
func (f *Fleet) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Stats{Up: f.up, Since: f.since, LastError: f.lastError,
		Written: f.written.Load(), Applied: f.applied.Load(), Dropped: f.q.dropped.Load(),
		WriteErrors: f.writeErrors.Load(), Queued: f.q.len()}
}

func (f *Fleet) setUp(up bool, err error) {
	f.mu.Lock()
	changed := f.up != up
	f.up = up
	if err != nil {
		f.lastError = err.Error()
	}
	if changed {
		f.since = time.Now()
	}
	f.mu.Unlock()
	if !changed {
		return
	}
	if up {
		f.log.Info("fleet link up", "shared_cache", f.cfg.Redacted(), "node", f.cfg.Node)
	} else {
		f.log.Warn("fleet link down", "shared_cache", f.cfg.Redacted(), "error", err)
	}
	if f.OnLink != nil {
		f.OnLink(up, err)
	}
}

// Run keeps the link up until ctx ends, reconnecting with back-off, then
// closes the client. Records published while the link is down wait in the
// bounded queue and are written once it is back.
func (f *Fleet) Run(ctx context.Context) error {
	defer f.rdb.Close()
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := f.session(ctx)
		if ctx.Err() != nil {
			break
		}
		f.setUp(false, err)
		if time.Since(start) > 10*time.Second {
			backoff = 200 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	f.flushOnExit()
	return nil
}

// session runs one connection: subscribe, resync, then read changes,
// write the queue and send heartbeats until any of them fails.
func (f *Fleet) session(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := f.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	sub := f.rdb.Subscribe(ctx, f.channel())
	defer sub.Close()
	// go-redis reads ignore cancellation: closing the subscription is what
	// ends a blocked ReceiveMessage when the session ends.
	stop := context.AfterFunc(ctx, func() { sub.Close() })
	defer stop()
	if _, err := sub.Receive(ctx); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if err := f.resync(ctx); err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	if err := f.heartbeat(ctx); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	f.setUp(true, nil)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); cancel(f.writeLoop(ctx)) }()
	go func() { defer wg.Done(); cancel(f.beatLoop(ctx)) }()
	err := f.readLoop(ctx, sub)
	cancel(err)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

func (f *Fleet) readLoop(ctx context.Context, sub *redis.PubSub) error {
	for {
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		f.applyJSON([]byte(msg.Payload))
	}
}

// applyJSON applies one encoded record from another node.
func (f *Fleet) applyJSON(b []byte) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		f.log.Warn("fleet: undecodable record ignored", "error", err)
		return
	}
	if r.Node == f.cfg.Node || !r.Expires.After(time.Now()) {
		return
	}
	apply := f.kinds[r.Kind]
	if apply == nil {
		return
	}
	apply(r)
	f.applied.Add(1)
}

// resync applies every live record in Redis: what other nodes learned
// while this one was away, or before it started.
func (f *Fleet) resync(ctx context.Context) error {
	var cursor uint64
	for {
		keys, next, err := f.rdb.Scan(ctx, cursor, f.prefix()+"rec:*", 500).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			vals, err := f.rdb.MGet(ctx, keys...).Result()
			if err != nil {
				return err
			}
			for _, v := range vals {
				if s, ok := v.(string); ok {
					f.applyJSON([]byte(s))
				}
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}
