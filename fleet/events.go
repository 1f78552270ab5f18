package fleet

import (
	"context"
	"encoding/json"
)

// PublishEvent queues an event (any JSON-encodable value) for the fleet's
// event stream; it never blocks.
func (f *Fleet) PublishEvent(ev any) {
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	f.q.push(op{event: b})
}

// NodeEvent is an event of the fleet's stream with the node that saw it.
type NodeEvent struct {
	Node  string          `json:"node"`
	Event json.RawMessage `json:"event"`
}

// Events returns the fleet's latest n events, newest first.
func (f *Fleet) Events(ctx context.Context, n int64) ([]NodeEvent, error) {
	msgs, err := f.rdb.XRevRangeN(ctx, f.eventsKey(), "+", "-", n).Result()
	if err != nil {
		return nil, err
	}
	out := make([]NodeEvent, 0, len(msgs))
	for _, m := range msgs {
		node, _ := m.Values["node"].(string)
		ev, _ := m.Values["event"].(string)
		if !json.Valid([]byte(ev)) {
			continue
		}
		out = append(out, NodeEvent{Node: node, Event: json.RawMessage(ev)})
	}
	return out, nil
}
