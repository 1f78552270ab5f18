package web

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// ProbeView is the gist of one probe result.
type ProbeView struct {
	Target  string    `json:"target"`
	Status  string    `json:"status"` // probe.Status*: ok, no-starttls, unreachable, temporary, no-mail
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time"`
	Expires time.Time `json:"expires"`
	// Levels says for may, encrypt, verify and secure whether delivery
	// under it would succeed to every reachable MX.
	Levels map[string]bool `json:"levels,omitempty"`
	// TLSVersions are the versions the MX addresses negotiated.
	TLSVersions []string `json:"tls_versions,omitempty"`
	// CertExpires is the earliest expiry of a presented leaf certificate.
	CertExpires *time.Time `json:"cert_expires,omitempty"`
}

func probeView(r *probe.Result) *ProbeView {
	if r == nil {
		return nil
	}
	v := &ProbeView{Target: r.Target, Status: r.Status, Reason: r.Reason, Time: r.Time, Expires: r.Expires}
	if len(r.Levels) > 0 {
		v.Levels = make(map[string]bool, len(r.Levels))
		for l, lv := range r.Levels {
			v.Levels[l] = lv.OK
		}
	}
	for _, mx := range r.MX {
		for _, a := range mx.Addrs {
			if a.TLS == nil {
				continue
			}
			if !slices.Contains(v.TLSVersions, a.TLS.Version) {
				v.TLSVersions = append(v.TLSVersions, a.TLS.Version)
			}
			if len(a.TLS.Chain) > 0 {
				na := a.TLS.Chain[0].NotAfter
				if v.CertExpires == nil || na.Before(*v.CertExpires) {
					v.CertExpires = &na
				}
			}
		}
	}
	slices.Sort(v.TLSVersions)
	return v
}

// EntryView is one entry of the outbound, recipients or senders section.
type EntryView struct {
	Key      string `json:"key"`
	Policy   string `json:"policy"` // as Postfix gets it
	Level    string `json:"level"`
	Testing  bool   `json:"testing,omitempty"`
	Note     string `json:"note,omitempty"`
	ReviewBy string `json:"review_by,omitempty"` // YYYY-MM-DD
	Source   string `json:"source"`              // file:line
	// Check is the probe level that says whether the entry's policy can
	// be met ("" when the policy enforces nothing), and CheckOK the
	// verdict of the last probe (nil when there is none).
	Check   string     `json:"check,omitempty"`
	CheckOK *bool      `json:"check_ok,omitempty"`
	Probe   *ProbeView `json:"probe,omitempty"`
}

// RuleView is one inbound rule.
type RuleView struct {
	Name    string   `json:"name"`
	From    []string `json:"from,omitempty"`
	To      []string `json:"to,omitempty"`
	Client  []string `json:"client,omitempty"`
	Require string   `json:"require"`
	Action  string   `json:"action"`
	Testing bool     `json:"testing,omitempty"`
	Header  string   `json:"header,omitempty"`
	Source  string   `json:"source"`
}

// TableView is the policy table in use.
type TableView struct {
	Loaded     bool        `json:"loaded"`
	Files      []string    `json:"files,omitempty"`
	Defaults   *Defaults   `json:"defaults,omitempty"`
	Outbound   []EntryView `json:"outbound"`
	Recipients []EntryView `json:"recipients"`
	Senders    []EntryView `json:"senders"`
	Inbound    []RuleView  `json:"inbound"`
}

// Defaults is the table's defaults section.
type Defaults struct {
	Outbound      string `json:"outbound,omitempty"`
	Learn         string `json:"learn"`
	LearnMaxAge   string `json:"learn_max_age"`
	InboundAction string `json:"inbound_action"`
}

// probeIndex returns the latest probe results by canonical target.
func (s *server) probeIndex() map[string]*probe.Result {
	m := map[string]*probe.Result{}
	if s.Probes == nil {
		return m
	}
	for _, r := range s.Probes.All() {
		if r != nil {
			m[r.Target] = r
		}
	}
	return m
}

// entryViews describes entries with the verdict of their last probe, as
// the monitor judges it (engine.Judge: the level and the policy's
// attributes — protocols=, match=, a fingerprint).
func entryViews(es []*store.Entry, probes map[string]*probe.Result, now time.Time) []EntryView {
	out := make([]EntryView, 0, len(es))
	for _, e := range es {
		v := EntryView{Key: e.Key, Testing: e.Testing, Note: e.Note, Source: e.Source.String()}
		if e.Policy != nil {
			v.Policy, v.Level = e.Policy.Text, e.Policy.Level.String()
			v.Check = engine.CheckLevel(e.Policy)
		}
		if !e.ReviewBy.IsZero() {
			v.ReviewBy = e.ReviewBy.Format(time.DateOnly)
		}
		if probes != nil && !strings.HasPrefix(e.Key, ".") {
			if target, err := probe.Canonical(e.Key); err == nil {
				if r := probes[target]; r != nil {
					v.Probe = probeView(r)
					// The monitor's verdict: Judge includes the level's and
					// decides with the policy's own match= or tafile= where
					// the probe's verify/secure verdicts (default match
					// lists, system roots) do not apply. A probe that said
					// nothing of the destination's TLS (temporary failure,
					// unreachable, null MX) gives no verdict.
					if v.Check != "" && !r.SaysNothingOfTLS() {
						ok := true
						for _, f := range engine.Judge(e, r, now) {
							if f.Kind == events.OutboundProbeFailed {
								ok = false
							}
						}
						v.CheckOK = &ok
					}
				}
			}
		}
		out = append(out, v)
	}
	return out
}

func ruleViews(rs []*store.InboundRule) []RuleView {
	out := make([]RuleView, 0, len(rs))
	for _, r := range rs {
		out = append(out, RuleView{Name: r.Name, From: r.From, To: r.To, Client: r.Client, Require: r.Require,
			Action: r.Action, Testing: r.Testing, Header: r.Header, Source: r.Source.String()})
	}
	return out
}

// tableView describes the table in use (Loaded false before the first).
func (s *server) tableView() TableView {
	st := s.Engine.Store()
	if st == nil {
		return TableView{Outbound: []EntryView{}, Recipients: []EntryView{}, Senders: []EntryView{}, Inbound: []RuleView{}}
	}
	t := st.Table()
	probes := s.probeIndex()
	d := &Defaults{Learn: t.Defaults.Learn, LearnMaxAge: t.Defaults.LearnMaxAge.String(), InboundAction: t.Defaults.InboundAction}
	if t.Defaults.Outbound != nil {
		d.Outbound = t.Defaults.Outbound.Text
	}
	return TableView{
		Loaded: true, Files: t.Files, Defaults: d,
		Outbound:   entryViews(t.Outbound, probes, s.Now()),
		Recipients: entryViews(t.Recipients, nil, time.Time{}),
		Senders:    entryViews(t.Senders, nil, time.Time{}),
		Inbound:    ruleViews(t.Inbound),
	}
}

func (s *server) apiTable(w http.ResponseWriter, r *http.Request) {
	v := s.tableView()
	status := http.StatusOK
	if !v.Loaded {
		status = http.StatusServiceUnavailable
	}
	s.writeJSON(w, status, v)
}

// ParseSince parses a "since" value: a Go duration ("24h", "90m"), a
// number of days ("7d"), or an RFC 3339 time. Durations count back from
// now.
func ParseSince(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return now.Add(-24 * time.Hour), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return time.Time{}, fmt.Errorf("since %q: want a duration (24h, 7d) or an RFC 3339 time", v)
		}
		return now.Add(-time.Duration(n) * 24 * time.Hour), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("since %q: want a duration (24h, 7d) or an RFC 3339 time", v)
	}
	return now.Add(-d), nil
}

// EventCoverage says where the events of a period were counted from and
// what of the period may be missing (fields that /api/events and
// /api/report gained: clients that ignore them read what they read
// before).
type EventCoverage struct {
	// EventsSource is "log" when the events were read from the event
	// log's files (log.events), "ring" when from the in-memory ring
	// alone, which keeps the latest EventsRingCap events only: the event
	// log is disabled, or could not be opened.
	EventsSource  string `json:"events_source"`
	EventsRingCap int    `json:"events_ring_cap,omitempty"`
	// EventsRotatedBefore is set when the period starts before the oldest
	// event still known: the events before it were rotated away
	// (log.events_keep, log.events_max_mb).
	EventsRotatedBefore *time.Time `json:"events_rotated_before,omitempty"`
	// EventsError says that reading the event log failed: the counts
	// lack what could not be read.
	EventsError string `json:"events_error,omitempty"`
}

// scanEvents calls f with every event from since on (events.Ring.Scan:
// from the event log when there is one) and says where they came from.
func (s *server) scanEvents(since time.Time, f func(events.Event)) EventCoverage {
	cov, err := s.Engine.Events().Scan(since, f)
	c := EventCoverage{EventsSource: "log"}
	if !cov.FromLog {
		c.EventsSource, c.EventsRingCap = "ring", cov.RingCap
	}
	if !cov.RotatedBefore.IsZero() {
		c.EventsRotatedBefore = &cov.RotatedBefore
	}
	if err != nil {
		c.EventsError = err.Error()
		s.Logger.Warn("event log: reading the period's events back", "error", err)
	}
	return c
}

// latest keeps the n newest events it is offered, newest first (the
// order of equal times kept).
type latest struct {
	n   int
	evs []events.Event
}

// add offers e and returns how many events the list gained: 1, or 0 when
// e was too old or took the place of an older one.
func (l *latest) add(e events.Event) int {
	gained := 1
	if len(l.evs) >= l.n {
		if l.n == 0 || !e.Time.After(l.evs[len(l.evs)-1].Time) {
			return 0
		}
		l.evs, gained = l.evs[:len(l.evs)-1], 0
	}
	i := len(l.evs) // events mostly come newest first: this is mostly the end
	for i > 0 && e.Time.After(l.evs[i-1].Time) {
		i--
	}
	l.evs = slices.Insert(l.evs, i, e)
	return gained
}

// maxListedEvents bounds the events /api/events and /api/report list;
// they count every event of the period.
const maxListedEvents = 1000

// EventsView is the answer of /api/events.
type EventsView struct {
	Since time.Time `json:"since"`
	// Events are the newest of the period's events that match the
	// filters, newest first: at most limit, at most 1000.
	Events []events.Event `json:"events"`
	// Total counts every event of the period that matches the filters.
	Total int `json:"total"`
	EventCoverage
}

func (s *server) filteredEvents(q url.Values) (EventsView, error) {
	since, err := ParseSince(q.Get("since"), s.Now())
	if err != nil {
		return EventsView{}, err
	}
	limit := maxListedEvents
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return EventsView{}, fmt.Errorf("limit %q: want a number", l)
		}
		if n > 0 {
			limit = min(n, limit)
		}
	}
	kind, domain := events.Kind(q.Get("kind")), strings.ToLower(q.Get("domain"))
	list := latest{n: limit, evs: []events.Event{}}
	v := EventsView{Since: since}
	v.EventCoverage = s.scanEvents(since, func(e events.Event) {
		if (kind == "" || e.Kind == kind) && (domain == "" || e.Domain == domain) {
			v.Total++
			list.add(e)
		}
	})
	v.Events = list.evs
	return v, nil
}

func (s *server) apiEvents(w http.ResponseWriter, r *http.Request) {
	v, err := s.filteredEvents(r.URL.Query())
	if err != nil {
		s.badRequest(w, err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, v)
}

// InboundView is the answer of /api/inbound.
type InboundView struct {
	// CountedSince is when counting began (the daemon's start).
	CountedSince time.Time            `json:"counted_since"`
	Domains      []engine.DomainStats `json:"domains"`
}

func (s *server) apiInbound(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, InboundView{CountedSince: s.Started, Domains: s.Engine.Stats().Snapshot()})
}

func (s *server) apiProbes(w http.ResponseWriter, r *http.Request) {
	out := []*ProbeView{}
	if s.Probes != nil {
		for _, res := range s.Probes.All() {
			if v := probeView(res); v != nil {
				out = append(out, v)
			}
		}
	}
	slices.SortFunc(out, func(a, b *ProbeView) int { return strings.Compare(a.Target, b.Target) })
	s.writeJSON(w, http.StatusOK, out)
}

// Report is the answer of /api/report: per domain, inbound mail with and
// without TLS, the outbound entries with their probe verdicts, and the
// events of the period.
type Report struct {
	Host      string    `json:"host"` // the daemon's host name
	Generated time.Time `json:"generated"`
	Since     time.Time `json:"since"` // events are counted from here
	// InboundSince is when inbound counting began (the daemon's start):
	// inbound counters are not windowed.
	InboundSince time.Time `json:"inbound_since"`
	TableLoaded  bool      `json:"table_loaded"`
	// EventTotals counts the period's events by kind (what the event log
	// still holds of it: see EventCoverage).
	EventTotals map[events.Kind]int `json:"event_totals"`
	Domains     []ReportDomain      `json:"domains"`
	EventCoverage
}

// ReportDomain is everything known about one partner domain.
type ReportDomain struct {
	Domain   string         `json:"domain"`
	Inbound  *InboundCounts `json:"inbound,omitempty"`
	Outbound []ReportEntry  `json:"outbound,omitempty"`
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
	s.writeJSON(w, http.StatusOK, s.report(since))
}
