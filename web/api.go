package web

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
)

// InboundView is the answer of /api/inbound.
type InboundView struct {
	// CountedSince is when counting began (kept across restarts with the event log).
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
