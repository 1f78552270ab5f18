package fleet

import (
	"context"
	"time"
)

// Claim reports whether this node should send the alert of kind for key:
// the first node to claim it within ttl does, the others stay quiet. When
// Redis cannot answer within a second, every node sends: a duplicate
// alert is better than none.
func (f *Fleet) Claim(ctx context.Context, kind, key string, ttl time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ok, err := f.rdb.SetNX(ctx, f.prefix()+"alert:"+kind+":"+key, f.cfg.Node, ttl).Result()
	if err != nil {
		f.log.Warn("fleet: alert claim failed; sending it from this node", "kind", kind, "key", key, "error", err)
		return true
	}
	return ok
}
