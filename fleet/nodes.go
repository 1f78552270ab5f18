package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// NodeInfo is one daemon's heartbeat.
type NodeInfo struct {
	Node     string    `json:"node"`
	Started  time.Time `json:"started"`
	LastSeen time.Time `json:"last_seen"`
}

func (f *Fleet) nodeKey(node string) string { return f.prefix() + "node:" + node }

func (f *Fleet) heartbeat(ctx context.Context) error {
	b, _ := json.Marshal(NodeInfo{Node: f.cfg.Node, Started: f.started, LastSeen: time.Now()})
	return f.rdb.Set(ctx, f.nodeKey(f.cfg.Node), b, 3*f.cfg.Heartbeat).Err()
}

// beatLoop renews the heartbeat; a failure ends the session, so a dead
// link is noticed within one heartbeat even when nothing is written.
func (f *Fleet) beatLoop(ctx context.Context) error {
	t := time.NewTicker(f.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := f.heartbeat(ctx); err != nil {
				return fmt.Errorf("heartbeat: %w", err)
			}
		}
	}
}

// Nodes lists the daemons whose heartbeat is live, this one included.
func (f *Fleet) Nodes(ctx context.Context) ([]NodeInfo, error) {
	var out []NodeInfo
	var cursor uint64
	for {
		keys, next, err := f.rdb.Scan(ctx, cursor, f.prefix()+"node:*", 100).Result()
		if err != nil {
			return nil, err
		}
		if len(keys) > 0 {
			vals, err := f.rdb.MGet(ctx, keys...).Result()
			if err != nil {
				return nil, err
			}
			for _, v := range vals {
				var n NodeInfo
				if s, ok := v.(string); ok && json.Unmarshal([]byte(s), &n) == nil {
					out = append(out, n)
				}
			}
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}
