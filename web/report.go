package web

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/outbound"
)

// /api/report: everything known per partner domain, what `tlspolicyd
// report` prints.

// Report is the answer of /api/report: per domain, inbound mail with and
// without TLS, the outbound entries with their probe verdicts, and the
// events of the period.
type Report struct {
	Host      string    `json:"host"` // the daemon's host name
	Generated time.Time `json:"generated"`
	Since     time.Time `json:"since"` // events are counted from here
	// InboundSince is when inbound counting began (kept across restarts with the event log):
	// inbound counters are not windowed.
	InboundSince time.Time `json:"inbound_since"`
	TableLoaded  bool      `json:"table_loaded"`
	// EventTotals counts the period's events by kind (what the event log
	// still holds of it: see EventCoverage).
	EventTotals map[events.Kind]int `json:"event_totals"`
	Domains     []ReportDomain      `json:"domains"`
	// Maillog is the Postfix log the outbound TLS counts are read from
	// ("" when it is not followed); they count whole UTC days from Since's.
	Maillog string `json:"maillog,omitempty"`
	EventCoverage
}

// ReportDomain is everything known about one partner domain.
type ReportDomain struct {
	Domain  string         `json:"domain"`
	Inbound *InboundCounts `json:"inbound,omitempty"`
	// OutboundTLS is what Postfix logged delivering to the domain.
	OutboundTLS *outbound.DomainReport `json:"outbound_tls,omitempty"`
	Outbound    []ReportEntry          `json:"outbound,omitempty"`
	// Counts are the period's events by kind; Events the newest of them,
	// newest first: at most 20 a domain and 1000 in the whole report.
	Counts map[string]int `json:"event_counts,omitempty"`
	Events []events.Event `json:"events,omitempty"`
}

// InboundCounts are the messages seen from a sender domain.
type InboundCounts struct {
	WithTLS    uint64            `json:"with_tls"`
	WithoutTLS uint64            `json:"without_tls"`
	Versions   map[string]uint64 `json:"versions,omitempty"`
}

// ReportEntry is one table entry concerning the domain.
type ReportEntry struct {
	Section string `json:"section"` // outbound, recipients or senders
	EntryView
}

// maxDomainEvents bounds the events listed per domain in a report.
const maxDomainEvents = 20

// oldestListed returns the time of the oldest event in lists.
func oldestListed(lists map[*ReportDomain]*latest) time.Time {
	var t time.Time
	for _, l := range lists {
		if n := len(l.evs); n > 0 && (t.IsZero() || l.evs[n-1].Time.Before(t)) {
			t = l.evs[n-1].Time
		}
	}
	return t
}

// ReportDomainOf returns the domain a table key or event concerns:
// "[smtp.partner.example]:587" → smtp.partner.example, ".bank.example" →
// bank.example, "cfo@partner.example" → partner.example.
func ReportDomainOf(key string) string {
	k := strings.ToLower(key)
	if i := strings.LastIndexByte(k, '@'); i >= 0 {
		k = k[i+1:]
	}
	if strings.HasPrefix(k, "[") {
		if i := strings.IndexByte(k, ']'); i > 0 {
			k = k[1:i]
		}
	} else if i := strings.LastIndexByte(k, ':'); i >= 0 && !strings.Contains(k[:i], ":") {
		k = k[:i]
	}
	return strings.TrimPrefix(k, ".")
}

// maxReportDomains bounds the report's rows: the inbound statistics'
// 10,000 sender domains, the table's, and room for more from events.
const maxReportDomains = 20000

// otherReportDomain is the row of the event domains beyond
// maxReportDomains.
const otherReportDomain = "(other)"

func (s *server) report(since time.Time) Report {
	now := s.Now()
	rep := Report{Host: s.Hostname, Generated: now, Since: since, InboundSince: s.Started, EventTotals: map[events.Kind]int{}}
	doms := map[string]*ReportDomain{}
	get := func(d string) *ReportDomain {
		if d == "" {
			d = "(none)"
		}
		rd := doms[d]
		if rd == nil {
			rd = &ReportDomain{Domain: d}
			doms[d] = rd
		}
		return rd
	}
	for _, st := range s.Engine.Stats().Snapshot() {
		get(st.Domain).Inbound = &InboundCounts{WithTLS: st.WithTLS, WithoutTLS: st.WithoutTLS, Versions: st.Versions}
	}
	if s.Outbound != nil {
		rep.Maillog = s.Maillog
		for _, row := range s.Outbound.Report(since) {
			d := row.Domain
			if doms[d] == nil && len(doms) >= maxReportDomains {
				continue // the tracker's own (other) row has the rest
			}
			get(d).OutboundTLS = &row
		}
	}
	tv := s.tableView()
	rep.TableLoaded = tv.Loaded
	for _, sec := range []struct {
		name    string
		entries []EntryView
	}{{"outbound", tv.Outbound}, {"recipients", tv.Recipients}, {"senders", tv.Senders}} {
		for _, e := range sec.entries {
			rd := get(ReportDomainOf(e.Key))
			rd.Outbound = append(rd.Outbound, ReportEntry{Section: sec.name, EntryView: e})
		}
	}
	// Every event is counted; the newest are listed, at most
	// maxDomainEvents a domain and maxListedEvents in all. The events come
	// roughly newest first: once maxListedEvents are listed, only an event
	// newer than the oldest of them can still be (those of the ring not
	// in the files come last), and the whole is cut down at the end.
	lists := map[*ReportDomain]*latest{}
	listed := 0
	var floor time.Time
	// Sender domains of inbound events come from the internet, and the
	// event log holds up to (1+keep)×max_mb of them: a domain first seen
	// in an event once maxReportDomains rows exist is counted under
	// "(other)", as the per-domain statistics are.
	eventDomain := func(d string) *ReportDomain {
		if d == "" {
			d = "(none)"
		}
		if doms[d] == nil && len(doms) >= maxReportDomains {
			d = otherReportDomain
		}
		return get(d)
	}
	rep.EventCoverage = s.scanEvents(since, func(e events.Event) {
		rep.EventTotals[e.Kind]++
		rd := eventDomain(e.Domain)
		if rd.Counts == nil {
			rd.Counts = map[string]int{}
		}
		rd.Counts[string(e.Kind)]++
		if listed >= maxListedEvents && !e.Time.After(floor) {
			return
		}
		l := lists[rd]
		if l == nil {
			l = &latest{n: maxDomainEvents}
			lists[rd] = l
		}
		listed += l.add(e)
		if listed >= maxListedEvents && floor.IsZero() {
			floor = oldestListed(lists)
		}
	})
	type listedEvent struct {
		rd *ReportDomain
		e  events.Event
	}
	var all []listedEvent
	for rd, l := range lists {
		for _, e := range l.evs {
			all = append(all, listedEvent{rd, e})
		}
	}
	slices.SortStableFunc(all, func(a, b listedEvent) int { return b.e.Time.Compare(a.e.Time) })
	for _, le := range all[:min(len(all), maxListedEvents)] {
		le.rd.Events = append(le.rd.Events, le.e)
	}
	rep.Domains = make([]ReportDomain, 0, len(doms))
	for _, rd := range doms {
		rep.Domains = append(rep.Domains, *rd)
	}
	slices.SortFunc(rep.Domains, func(a, b ReportDomain) int { return strings.Compare(a.Domain, b.Domain) })
	return rep
}

func (s *server) apiReport(w http.ResponseWriter, r *http.Request) {
	since, err := ParseSince(r.URL.Query().Get("since"), s.Now())
	if err != nil {
		s.badRequest(w, err.Error())
		return
	}
	if !s.gate.acquire(r.Context()) {
		s.busy(w)
		return
	}
	body, err := s.gate.cachedReport(r.URL.Query().Get("since"), s.Now(), func() Report { return s.report(since) })
	s.gate.release()
	if err != nil {
		s.Logger.Error("encoding the report", "error", err)
		http.Error(w, "cannot encode the report", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}
