package web

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tlspolicyd/tlspolicyd/fleet"
)

// FleetInfo is what the status page, /api/fleet and /metrics read of the
// link to a fleet's shared cache (a *fleet.Fleet).
type FleetInfo interface {
	Node() string
	Stats() fleet.Stats
	Nodes(ctx context.Context) ([]fleet.NodeInfo, error)
	Events(ctx context.Context, n int64) ([]fleet.NodeEvent, error)
}

// FleetView is the fleet section of the status page and /api/fleet.
type FleetView struct {
	Node      string            `json:"node"`
	Up        bool              `json:"link_up"`
	Since     time.Time         `json:"since"`
	LastError string            `json:"last_error,omitempty"`
	Queued    int               `json:"queued"`
	Written   uint64            `json:"written"`
	Applied   uint64            `json:"applied"`
	Dropped   uint64            `json:"dropped"`
	Nodes     []fleet.NodeInfo  `json:"nodes"`
	Events    []fleet.NodeEvent `json:"events"`
	ReadError string            `json:"read_error,omitempty"` // nodes or events could not be read
}

// fleetView reads the link's state, and the nodes and latest events from
// the shared cache, waiting at most a second for it.
func (s *server) fleetView(ctx context.Context, events int64) *FleetView {
	if s.Fleet == nil {
		return nil
	}
	st := s.Fleet.Stats()
	v := &FleetView{Node: s.Fleet.Node(), Up: st.Up, Since: st.Since, LastError: st.LastError, Queued: st.Queued,
		Written: st.Written, Applied: st.Applied, Dropped: st.Dropped, Nodes: []fleet.NodeInfo{}, Events: []fleet.NodeEvent{}}
	if !st.Up {
		return v
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	nodes, err := s.Fleet.Nodes(ctx)
	if err == nil {
		v.Nodes = nodes
		var evs []fleet.NodeEvent
		if evs, err = s.Fleet.Events(ctx, events); err == nil {
			v.Events = evs
		}
	}
	if err != nil {
		v.ReadError = err.Error()
	}
	return v
}

// apiFleet serves the fleet's nodes, link state and latest events.
func (s *server) apiFleet(w http.ResponseWriter, r *http.Request) {
	v := s.fleetView(r.Context(), 100)
	if v == nil {
		s.writeJSON(w, http.StatusNotFound, map[string]string{"error": "no shared cache configured (shared_cache)"})
		return
	}
	s.writeJSON(w, http.StatusOK, v)
}

// FleetEvent is one event of the fleet's stream, decoded for display.
type FleetEvent struct {
	Node   string
	Time   time.Time
	Kind   string
	Domain string
	Reason string
}

// DecodeFleetEvents decodes the events of the fleet's stream; one that
// does not decode is left out.
func DecodeFleetEvents(evs []fleet.NodeEvent) []FleetEvent {
	out := make([]FleetEvent, 0, len(evs))
	for _, e := range evs {
		var v struct {
			Time   time.Time `json:"time"`
			Kind   string    `json:"kind"`
			Domain string    `json:"domain"`
			Reason string    `json:"reason"`
		}
		if json.Unmarshal(e.Event, &v) == nil {
			out = append(out, FleetEvent{Node: e.Node, Time: v.Time, Kind: v.Kind, Domain: v.Domain, Reason: v.Reason})
		}
	}
	return out
}

// fleetCollector exports the link's state and counters at scrape time.
type fleetCollector struct {
	f                                     FleetInfo
	up, written, applied, dropped, errors *prometheus.Desc
	queued                                *prometheus.Desc
}

// Fleet registers the metrics of the link to the shared cache.
func (m *Metrics) Fleet(f FleetInfo) {
	m.reg.MustRegister(&fleetCollector{f: f,
		up:      prometheus.NewDesc("tlspolicyd_fleet_link_up", "1 while the shared cache (Redis/Valkey) is reachable and in sync; 0 while this node learns alone.", nil, nil),
		written: prometheus.NewDesc("tlspolicyd_fleet_written_total", "Records and events written to the shared cache.", nil, nil),
		applied: prometheus.NewDesc("tlspolicyd_fleet_applied_total", "Records from other nodes applied to this node's caches.", nil, nil),
		dropped: prometheus.NewDesc("tlspolicyd_fleet_dropped_total", "Writes dropped because the queue was full while the link was down (the oldest go first).", nil, nil),
		errors:  prometheus.NewDesc("tlspolicyd_fleet_write_errors_total", "Batches of writes that failed (each is retried).", nil, nil),
		queued:  prometheus.NewDesc("tlspolicyd_fleet_queued", "Writes waiting for the shared cache.", nil, nil),
	})
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.written, c.applied, c.dropped, c.errors, c.queued} {
		ch <- d
	}
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.f.Stats()
	up := 0.0
	if st.Up {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(c.written, prometheus.CounterValue, float64(st.Written))
	ch <- prometheus.MustNewConstMetric(c.applied, prometheus.CounterValue, float64(st.Applied))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(st.WriteErrors))
	ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(st.Queued))
}
