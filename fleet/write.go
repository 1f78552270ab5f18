package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// eventsMaxLen bounds the fleet's event stream (approximately: Redis trims
// whole macro nodes).
const eventsMaxLen = 10000

func (f *Fleet) eventsKey() string { return f.prefix() + "events" }

// writeLoop writes the queue in pipelined batches until ctx ends or Redis
// fails; a failed batch goes back to the front of the queue.
func (f *Fleet) writeLoop(ctx context.Context) error {
	for {
		batch := f.q.take(200)
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-f.q.wake:
				continue
			}
		}
		if err := f.write(ctx, batch); err != nil {
			f.q.putBack(batch)
			f.writeErrors.Add(1)
			return fmt.Errorf("write: %w", err)
		}
		f.written.Add(uint64(len(batch)))
	}
}

func (f *Fleet) write(ctx context.Context, batch []op) error {
	now := time.Now()
	pipe := f.rdb.Pipeline()
	n := 0
	for _, o := range batch {
		switch {
		case o.rec != nil:
			ttl := o.rec.Expires.Sub(now)
			if ttl <= 0 {
				continue
			}
			b, err := json.Marshal(o.rec)
			if err != nil {
				continue
			}
			pipe.Set(ctx, f.recKey(o.rec.Kind, o.rec.Key), b, ttl)
			pipe.Publish(ctx, f.channel(), b)
			n++
		case o.event != nil:
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: f.eventsKey(), MaxLen: eventsMaxLen, Approx: true,
				Values: []any{"node", f.cfg.Node, "event", o.event}})
			n++
		}
	}
	if n == 0 {
		return nil
	}
	_, err := pipe.Exec(ctx)
	return err
}

// flushOnExit gives what is still queued one short chance to reach Redis.
func (f *Fleet) flushOnExit() {
	batch := f.q.take(f.cfg.QueueSize)
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := f.write(ctx, batch); err != nil {
		f.log.Warn("fleet: writes lost at shutdown", "count", len(batch), "error", err)
	}
}
