package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/fleet"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// fakeFleet is a fleet link in a given state.
type fakeFleet struct {
	st    fleet.Stats
	nodes []fleet.NodeInfo
	evs   []fleet.NodeEvent
	err   error
}

func (f *fakeFleet) Node() string       { return "mx1" }
func (f *fakeFleet) Stats() fleet.Stats { return f.st }
func (f *fakeFleet) Nodes(context.Context) ([]fleet.NodeInfo, error) {
	return f.nodes, f.err
}
func (f *fakeFleet) Events(context.Context, int64) ([]fleet.NodeEvent, error) { return f.evs, f.err }

func fleetServer(t *testing.T, f FleetInfo) *httptest.Server {
	t.Helper()
	s, err := store.Load("testdata/table.yaml")
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(s, nil, events.NewRing(10), quiet())
	m := NewMetrics()
	if f != nil {
		m.Fleet(f)
	}
	srv := httptest.NewServer(New(Options{Engine: eng, Metrics: m, Logger: quiet(), Fleet: f,
		Hostname: "mx1.ourcorp.example", Now: func() time.Time { return now }}))
	t.Cleanup(srv.Close)
	return srv
}

// The status page and /api/fleet show the link's state, the nodes with
// their last heartbeat, and the fleet's events with the node of each;
// /metrics the link's gauge and counters.
func TestFleetSection(t *testing.T) {
	f := &fakeFleet{st: fleet.Stats{Up: true, Since: now.Add(-time.Hour), Written: 12, Applied: 7},
		nodes: []fleet.NodeInfo{{Node: "mx1", Started: now.Add(-2 * time.Hour), LastSeen: now.Add(-2 * time.Second)},
			{Node: "mx2", Started: now.Add(-3 * time.Hour), LastSeen: now.Add(-4 * time.Second)}},
		evs: []fleet.NodeEvent{{Node: "mx2", Event: json.RawMessage(`{"time":"2026-12-01T10:00:00Z","kind":"learned_downgrade","domain":"bank.example","reason":"no STARTTLS <b>"}`)}}}
	srv := fleetServer(t, f)
	code, _, body := get(t, srv.URL+"/")
	if code != 200 {
		t.Fatalf("status page: %d", code)
	}
	for _, want := range []string{"<h2>Fleet", "<code>mx1</code>", "link up", "<code>mx2</code>", "12 written", "7 applied",
		"learned_downgrade", "<code>bank.example</code>", "no STARTTLS &lt;b&gt;"} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	var v FleetView
	if code := getJSON(t, srv.URL+"/api/fleet", &v); code != 200 || !v.Up || len(v.Nodes) != 2 || len(v.Events) != 1 || v.Events[0].Node != "mx2" {
		t.Errorf("/api/fleet: %d %+v", code, v)
	}
	_, _, metrics := get(t, srv.URL+"/metrics")
	for _, want := range []string{"tlspolicyd_fleet_link_up 1", "tlspolicyd_fleet_written_total 12", "tlspolicyd_fleet_applied_total 7"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// Link down: said on the page, nodes and events are not asked for.
	f.st, f.err = fleet.Stats{Up: false, Since: now, LastError: "dial tcp: connection refused", Queued: 3}, errors.New("must not be asked")
	_, _, body = get(t, srv.URL+"/")
	for _, want := range []string{"link down", "3 writes wait", "connection refused", "No node seen (link down)"} {
		if !strings.Contains(body, want) {
			t.Errorf("status page (link down) lacks %q", want)
		}
	}
}

func TestFleetOff(t *testing.T) {
	srv := fleetServer(t, nil)
	if code, _, _ := get(t, srv.URL+"/api/fleet"); code != 404 {
		t.Errorf("/api/fleet without a shared cache: %d, want 404", code)
	}
	if _, _, body := get(t, srv.URL+"/"); strings.Contains(body, "<h2>Fleet") {
		t.Error("a Fleet section without a shared cache")
	}
}
