package web

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/outbound"
)

//go:embed status.html
var statusHTML string

// Page limits: the page stays readable and cheap with 100,000 entries;
// the JSON API has everything.
const (
	pageEntries = 500
	pageDomains = 100
	pageEvents  = 100
)

var pageTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"ago":       ago,
	"stamp":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
	"date":      func(t time.Time) string { return t.UTC().Format(time.DateOnly) },
	"pct":       pct,
	"versions":  versions,
	"join":      strings.Join,
	"hasPrefix": strings.HasPrefix,
	"deref":     func(b *bool) bool { return b != nil && *b },
	"derefTime": func(t *time.Time) time.Time {
		if t == nil {
			return time.Time{}
		}
		return *t
	},
	"short": shortReason,
	"kindclass": func(k events.Kind) string {
		switch k {
		case events.InboundWouldBlock:
			return "warn"
		case events.CertExpiring:
			return "warn"
		}
		return "bad"
	},
}).Parse(statusHTML))

type inboundRow struct {
	engine.DomainStats
	Total uint64
}

type pageData struct {
	Host        string
	Now         time.Time
	Started     time.Time
	Table       TableView
	More        map[string]int // entries not shown, by section
	Inbound     []inboundRow
	InboundMore int
	// Outbound: what Postfix logged delivering, by destination domain
	// (stuck ones first, then the busiest); Maillog the log followed.
	Outbound     []outbound.DomainReport
	OutboundMore int
	Maillog      string
	Events       []events.Event
	EventTotals  map[events.Kind]uint64
	Healthy      bool
	Blind        *blindView // set while every recent probe failed temporarily
	SourcesOn    bool       // DANE or MTA-STS is on
	// Fleet is the shared cache's section (nil when off), FleetEvents
	// the fleet's latest events with the node that saw each.
	Fleet       *FleetView
	FleetEvents []FleetEvent
}

// blindView is the status page's warning about a prober that learns
// nothing.
type blindView struct {
	Since  time.Time
	Latest string
}

func (s *server) page(w http.ResponseWriter, r *http.Request) {
	d := pageData{Host: s.Hostname, Now: s.Now(), Started: s.Started, Table: s.tableView(), More: map[string]int{},
		EventTotals: s.Engine.Events().Totals()}
	d.Healthy = d.Table.Loaded
	if s.Prober != nil {
		if blind, since, latest := s.Prober.Blind(); blind {
			d.Blind = &blindView{Since: since, Latest: latest}
		}
	}
	d.Table.Sources = s.sourcesView()
	d.SourcesOn = s.Sources != nil
	if d.Fleet = s.fleetView(r.Context(), 20); d.Fleet != nil {
		d.FleetEvents = DecodeFleetEvents(d.Fleet.Events)
	}
	if len(d.Table.Sources) > pageEntries {
		d.More["sources"] = len(d.Table.Sources) - pageEntries
		d.Table.Sources = d.Table.Sources[:pageEntries]
	}
	cut := func(name string, es []EntryView) []EntryView {
		if len(es) > pageEntries {
			d.More[name] = len(es) - pageEntries
			return es[:pageEntries]
		}
		return es
	}
	d.Table.Outbound = cut("outbound", d.Table.Outbound)
	d.Table.Recipients = cut("recipients", d.Table.Recipients)
	d.Table.Senders = cut("senders", d.Table.Senders)
	if len(d.Table.Inbound) > pageEntries {
		d.More["inbound"] = len(d.Table.Inbound) - pageEntries
		d.Table.Inbound = d.Table.Inbound[:pageEntries]
	}
	for _, st := range s.Engine.Stats().Snapshot() {
		d.Inbound = append(d.Inbound, inboundRow{st, st.WithTLS + st.WithoutTLS})
	}
	// Busiest senders first; those without TLS before those with, at equal volume.
	slices.SortStableFunc(d.Inbound, func(a, b inboundRow) int {
		if a.Total != b.Total {
			return cmpDesc(a.Total, b.Total)
		}
		return cmpDesc(a.WithoutTLS, b.WithoutTLS)
	})
	if len(d.Inbound) > pageDomains {
		d.InboundMore = len(d.Inbound) - pageDomains
		d.Inbound = d.Inbound[:pageDomains]
	}
	if s.Outbound != nil {
		d.Maillog = s.Maillog
		d.Outbound = s.Outbound.Report(d.Now.Add(-24 * time.Hour))
		slices.SortStableFunc(d.Outbound, func(a, b outbound.DomainReport) int {
			if a.Stuck != b.Stuck {
				return b.Stuck - a.Stuck
			}
			return cmpDesc(a.Messages, b.Messages)
		})
		if len(d.Outbound) > pageDomains {
			d.OutboundMore = len(d.Outbound) - pageDomains
			d.Outbound = d.Outbound[:pageDomains]
		}
	}
	d.Events = s.Engine.Events().Recent(pageEvents)

	var b bytes.Buffer
	if err := pageTmpl.Execute(&b, d); err != nil {
		s.Logger.Error("http: status page", "error", err)
		http.Error(w, "status page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !d.Healthy {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write(b.Bytes())
}

func cmpDesc(a, b uint64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

// ago says how long before now t was, coarsely ("3h ago").
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute && d > -time.Minute: // also a little ahead: the page's clock was read first
		return "just now"
	case d < 0:
		return "in " + coarse(-d)
	}
	return coarse(d) + " ago"
}

func coarse(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func pct(part, total uint64) string {
	if total == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(part)/float64(total))
}

// versions formats TLS version counts, most used first: "TLSv1.3 120 · TLSv1.2 4".
func versions(m map[string]uint64) string {
	type vc struct {
		v string
		n uint64
	}
	var l []vc
	for v, n := range m {
		l = append(l, vc{v, n})
	}
	slices.SortFunc(l, func(a, b vc) int {
		if a.n != b.n {
			return cmpDesc(a.n, b.n)
		}
		return strings.Compare(a.v, b.v)
	})
	var parts []string
	for _, x := range l {
		parts = append(parts, fmt.Sprintf("%s %d", x.v, x.n))
	}
	return strings.Join(parts, " · ")
}
