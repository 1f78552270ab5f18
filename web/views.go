package web

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// Views of the policy table and its probe results, as /api/table and the
// status page show them.

// ProbeView is the gist of one probe result.
type ProbeView struct {
	Target  string    `json:"target"`
	Status  string    `json:"status"` // probe.Status*: ok, no-starttls, tls-failed, unreachable, temporary, no-mail
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
	Check   string `json:"check,omitempty"`
	CheckOK *bool  `json:"check_ok,omitempty"`
	// CheckReason says why the policy cannot be met when CheckOK is
	// false (the monitor's event text).
	CheckReason string     `json:"check_reason,omitempty"`
	Probe       *ProbeView `json:"probe,omitempty"`
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
	// Sources are the domains the table does not list that DANE or
	// MTA-STS decide; absent when both sources are off.
	Sources []SourceView `json:"sources,omitempty"`
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
								ok, v.CheckReason = false, f.Reason
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
	v.Sources = s.sourcesView()
	status := http.StatusOK
	if !v.Loaded {
		status = http.StatusServiceUnavailable
	}
	s.writeJSON(w, status, v)
}
