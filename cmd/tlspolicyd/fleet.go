package main

import (
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/fleet"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/internal/safetext"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
	"github.com/tlspolicyd/tlspolicyd/web"
)

// The kinds of record a fleet shares.
const (
	fleetLearned = "learned"
	fleetProbe   = "probe"
	fleetSource  = "src-" // + srccache.Kind
)

// fleetLink is the daemon's link to its fleet's shared cache: it publishes
// what this node learns and applies what the others learned.
type fleetLink struct {
	*fleet.Fleet
	// applying is the source record being applied from the fleet, which
	// the source cache's change hook must not publish back.
	applying atomic.Pointer[srccache.Record]
}

// newFleet returns the link shared_cache configures, or nil when it is off.
// The link's ups and downs are events (the first up is not).
func newFleet(cfg config.Config, log *slog.Logger, ring *events.Ring) (*fleetLink, error) {
	if cfg.SharedCache == "" {
		return nil, nil
	}
	f, err := fleet.New(fleet.Config{URL: cfg.SharedCache, PasswordFile: cfg.SharedCachePasswordFile,
		CAFile: cfg.SharedCacheCA, Cluster: cfg.SharedCacheCluster, Node: cfg.SharedCacheNode}, log.With("component", "fleet"))
	if err != nil {
		return nil, err
	}
	var wentDown atomic.Bool
	link := f.Redacted() // the event's source: which shared cache
	f.OnLink = func(up bool, err error) {
		if !up {
			wentDown.Store(true)
			ring.Publish(events.Event{Kind: events.FleetLinkDown, Source: link,
				Reason: "shared cache unreachable: " + safetext.FirstLine(errString(err)) + "; answering from this node's own state"})
		} else if wentDown.Load() {
			ring.Publish(events.Event{Kind: events.FleetLinkUp, Source: link,
				Reason: "shared cache reachable again; resynchronised"})
		}
	}
	l := &fleetLink{Fleet: f}
	ring.Subscribe(func(e events.Event) { f.PublishEvent(e) })
	return l, nil
}

func errString(err error) string {
	if err == nil {
		return "unknown error"
	}
	return err.Error()
}

func (l *fleetLink) publish(kind, key string, expires time.Time, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	l.Publish(fleet.Record{Kind: kind, Key: key, Expires: expires, Data: b})
}

// shareProbes shares the probe cache's learned records and results. A
// learned record merged from the fleet goes back to it only when the merge
// says more than what came (an older first-learned time, a later
// confirmation); a downgrade (a record dropped) is never shared.
func (l *fleetLink) shareProbes(c *srccache.Probes) {
	if l == nil {
		return
	}
	c.SetShared(srccache.Shared{
		OnLearned: func(rec probe.LearnedRecord) { l.publish(fleetLearned, rec.Domain, c.LearnedExpiry(rec), rec) },
		OnResult:  func(r *probe.Result) { l.publish(fleetProbe, r.Target, r.Expires, r) },
	})
	l.Handle(fleetLearned, func(r fleet.Record) {
		var rec probe.LearnedRecord
		if json.Unmarshal(r.Data, &rec) != nil || rec.Domain != r.Key {
			return
		}
		if merged, _, news := c.MergeLearned(rec); news {
			l.publish(fleetLearned, merged.Domain, c.LearnedExpiry(merged), merged)
		}
	})
	l.Handle(fleetProbe, func(r fleet.Record) {
		var res probe.Result
		if json.Unmarshal(r.Data, &res) == nil && res.Target == r.Key {
			c.PutShared(&res)
		}
	})
}

// sourceChanged is the source cache's change hook: a record this node
// fetched successfully is shared. Failed attempts stay local (each node
// retries on its own), and so do records applied from the fleet.
func (l *fleetLink) sourceChanged(_, cur *srccache.Record) {
	if l == nil || cur == nil || cur == l.applying.Load() || cur.Error != "" ||
		cur.Kind != srccache.KindMTASTS && cur.Kind != srccache.KindDANE {
		return
	}
	l.publish(fleetSource+string(cur.Kind), cur.Domain, cur.Expires, cur)
}

// shareSources applies MTA-STS and DANE records from the fleet to c when
// they are better than what c holds (betterSource).
func (l *fleetLink) shareSources(c *srccache.Cache) {
	if l == nil || c == nil {
		return
	}
	for _, k := range []srccache.Kind{srccache.KindMTASTS, srccache.KindDANE} {
		l.Handle(fleetSource+string(k), func(r fleet.Record) {
			rec := new(srccache.Record)
			if json.Unmarshal(r.Data, rec) != nil || rec.Kind != k || rec.Domain != r.Key {
				return
			}
			if !betterSource(rec, c.Get(k, rec.Domain)) {
				return
			}
			l.applying.Store(rec)
			defer l.applying.Store(nil)
			_ = c.Put(rec)
		})
	}
}

// betterSource reports whether a record from the fleet should replace
// cur: one checked later does, except that between an MTA-STS policy and
// no policy (none published, or a failed attempt) the policy wins either
// way: a known policy stays in force until its max_age (RFC 8461 §5),
// whatever a node's later lookups found.
func betterSource(remote, cur *srccache.Record) bool {
	if cur == nil {
		return true
	}
	remotePolicy := remote.MTASTS != nil && remote.MTASTS.Policy != nil
	curPolicy := cur.MTASTS != nil && cur.MTASTS.Policy != nil
	if remotePolicy != curPolicy && cur.Kind == srccache.KindMTASTS {
		return remotePolicy
	}
	return remote.Checked.After(cur.Checked)
}

// web returns the link for the status page (an untyped nil when off).
func (l *fleetLink) web() web.FleetInfo {
	if l == nil {
		return nil
	}
	return l.Fleet
}
