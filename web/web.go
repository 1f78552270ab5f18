// Package web serves the daemon's HTTP interface: Prometheus metrics at
// /metrics, /healthz, a JSON API under /api/ (used by `tlspolicyd report`)
// and a status page at /: the policy table with each entry's last probe
// verdict, inbound TLS activity per sender domain, and recent events. The
// page is plain HTML (html/template), no JavaScript.
//
// Endpoints (GET):
//
//	/metrics                  Prometheus metrics (see examples/metrics.md)
//	/healthz                  200 "ok" while a valid table is loaded, else 503
//	/api/table                the policy table, entries with their last probe verdict, and
//	                          the domains DANE and MTA-STS decide (sources)
//	/api/events?since=24h     events, newest first (also &kind=, &domain=, &limit=)
//	/api/inbound              inbound mail per sender domain: with/without TLS, by version
//	/api/probes               the latest probe result per target
//	/api/report?since=24h     all of it per domain: what `tlspolicyd report` shows
package web

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/outbound"
	"github.com/tlspolicyd/tlspolicyd/probe"
)

// Options configures the handler returned by New.
type Options struct {
	// Engine is the policy engine whose table, events and counters are
	// shown. Required.
	Engine *engine.Engine
	// Probes gives the latest probe results (a *srccache.Probes); nil (an
	// untyped nil) when the daemon does not probe.
	Probes interface{ All() []*probe.Result }
	// Prober says whether every recent probe failed temporarily (an
	// *engine.ProbeHealth): the status page then shows a warning. nil
	// when the daemon does not probe.
	Prober interface {
		Blind() (blind bool, since time.Time, latest string)
	}
	// Sources are the DANE and MTA-STS sources (a *sources.Manager), shown
	// in their own section; nil when both are off.
	Sources SourcesInfo
	// Metrics are served at /metrics; nil serves a fresh set (Go runtime
	// and engine metrics only).
	Metrics *Metrics
	// Logger receives request errors (default slog.Default()).
	Logger *slog.Logger
	// Started is when the engine started counting inbound mail (default:
	// when New is called).
	Started time.Time
	// Hostname names the daemon on the status page (default os.Hostname()).
	Hostname string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Outbound gives the outbound TLS report read from Postfix's log (an
	// *outbound.Tracker); nil (an untyped nil) when the log is not
	// followed. Maillog names the log followed.
	Outbound interface {
		Report(since time.Time) []outbound.DomainReport
	}
	Maillog string
	// Fleet is the link to the fleet's shared cache (a *fleet.Fleet);
	// nil (an untyped nil) when shared_cache is off.
	Fleet FleetInfo
}

// server holds the handlers' shared state.
type server struct {
	Options
	gate *scanGate // one event-log scan at a time; the last report
}

// New returns the HTTP handler for every endpoint.
func New(o Options) http.Handler {
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Started.IsZero() {
		o.Started = time.Now()
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Metrics.attachEngine(o.Engine)
	if o.Sources != nil {
		o.Metrics.Sources(o.Sources)
	}
	s := &server{Options: o, gate: newScanGate()}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.Metrics.Handler())
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /api/table", s.apiTable)
	mux.HandleFunc("GET /api/events", s.apiEvents)
	mux.HandleFunc("GET /api/inbound", s.apiInbound)
	mux.HandleFunc("GET /api/probes", s.apiProbes)
	mux.HandleFunc("GET /api/report", s.apiReport)
	mux.HandleFunc("GET /api/fleet", s.apiFleet)
	mux.HandleFunc("GET /{$}", s.page)
	return securityHeaders(mux)
}

// securityHeaders forbids scripts, framing and content sniffing: the page
// shows text that came from the network (sender domains, client names).
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if s.Engine.Store() == nil {
		http.Error(w, "no valid policy table loaded", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// writeJSON writes v indented, for humans with curl as much as for tools.
func (s *server) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := encodeJSON(w, v); err != nil {
		s.Logger.Debug("http: writing response", "error", err)
	}
}

// encodeJSON writes v indented, as every JSON answer is written.
func encodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // protocols=>=TLSv1.2, not \u003e: served as application/json, nosniff
	return enc.Encode(v)
}

// apiError is the body of every API error.
type apiError struct {
	Error string `json:"error"`
}

func (s *server) badRequest(w http.ResponseWriter, msg string) {
	s.writeJSON(w, http.StatusBadRequest, apiError{msg})
}
