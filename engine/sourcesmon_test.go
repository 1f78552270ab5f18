package engine

import (
	"context"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// The monitor checks a domain's MTA-STS policy like a table entry: an MX
// that would fail it (here: no STARTTLS) is an event before mail is
// stuck; a testing policy's finding says testing; a second check within
// the interval probes nothing.
func TestCheckSource(t *testing.T) {
	e := New(loadTable(t, "outbound: {}\n"), nil, nil, nil)
	probes := 0
	m := &Monitor{Engine: e, Interval: time.Hour, Probe: func(_ context.Context, target string) (*probe.Result, error) {
		probes++
		return judgeResult(server{host: "mx1.example.com"}), nil
	}}
	rec := func(mode mtasts.Mode) *srccache.Record {
		return &srccache.Record{Kind: srccache.KindMTASTS, Domain: "example.com",
			MTASTS: &srccache.MTASTS{ID: "7", Policy: &mtasts.Policy{Mode: mode, MX: []string{"mx1.example.com"}, MaxAge: 86400}}}
	}
	if SourceEntry(rec(mtasts.ModeNone)) != nil {
		t.Fatal("an entry for mode none")
	}
	en := SourceEntry(rec(mtasts.ModeEnforce))
	if en.Policy.Text != "secure match=mx1.example.com servername=hostname" || en.Testing {
		t.Fatalf("entry %+v", en)
	}
	fs, err := m.CheckSource(context.Background(), en)
	if err != nil || len(fs) == 0 || fs[0].Kind != events.OutboundProbeFailed {
		t.Fatalf("findings %+v, %v", fs, err)
	}
	evs := e.Events().Recent(10)
	if len(evs) != 1 || evs[0].Kind != events.OutboundProbeFailed || evs[0].Source != "MTA-STS policy id 7" || evs[0].Rule != "example.com" {
		t.Fatalf("events %+v", evs)
	}
	if fs, _ := m.CheckSource(context.Background(), en); fs != nil || probes != 1 {
		t.Fatalf("re-checked within the interval: %d probes", probes)
	}

	m2 := &Monitor{Engine: e, Interval: time.Hour, Probe: m.Probe}
	tn := SourceEntry(rec(mtasts.ModeTesting))
	if !tn.Testing || tn.Policy.Text != "secure match=mx1.example.com servername=hostname" {
		t.Fatalf("testing entry %+v", tn)
	}
	if fs, _ := m2.CheckSource(context.Background(), tn); len(fs) == 0 {
		t.Fatal("no finding for a testing policy that would defer")
	}
	if evs := e.Events().Recent(1); evs[0].Action != "testing" {
		t.Fatalf("testing event %+v", evs[0])
	}
}
