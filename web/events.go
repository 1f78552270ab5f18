package web

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/duration"
)

// /api/events: the period's events, read back from the event log.

// ParseSince parses a "since" value: a duration ("24h", "90m", "7d",
// "1d12h": internal/duration's syntax, as everywhere) or an RFC 3339
// time. Durations count back from now.
func ParseSince(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return now.Add(-24 * time.Hour), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := duration.Parse(v)
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
	if !s.gate.acquire(r.Context()) {
		s.busy(w)
		return
	}
	v, err := s.filteredEvents(r.URL.Query())
	s.gate.release()
	if err != nil {
		s.badRequest(w, err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, v)
}
