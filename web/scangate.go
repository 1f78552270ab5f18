package web

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// reportReuse is how long a report built for one "since" is served again
// to requests with the same "since": a dashboard polling /api/report, or
// several opened at once, costs one read of the event log, not one each.
const reportReuse = 10 * time.Second

// scanGate lets one request at a time read the event log (/api/report and
// /api/events read every file of it): a burst of requests waits its turn
// instead of taking the CPU the lookups need. It keeps the last report.
type scanGate struct {
	sem    chan struct{}
	mu     sync.Mutex
	key    string // the "since" parameter of last
	at     time.Time
	last   []byte       // the last report, encoded: re-encoding a large one costs as much as building it
	builds atomic.Int64 // reports built (tests)
}

func newScanGate() *scanGate { return &scanGate{sem: make(chan struct{}, 1)} }

// acquire waits for the gate or ctx; release must follow a true.
func (g *scanGate) acquire(ctx context.Context) bool {
	select {
	case g.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g *scanGate) release() { <-g.sem }

// busy answers a request whose client gave up waiting for the gate.
func (s *server) busy(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "10")
	http.Error(w, "busy reading the event log for another request; retry", http.StatusServiceUnavailable)
}

// cachedReport returns the report for since (the raw parameter, key),
// encoded as writeJSON does, built by build unless one for the same key is
// younger than reportReuse. The caller holds the gate.
func (g *scanGate) cachedReport(key string, now time.Time, build func() Report) ([]byte, error) {
	g.mu.Lock()
	if g.key == key && g.last != nil && now.Sub(g.at) < reportReuse && now.Sub(g.at) >= 0 {
		b := g.last
		g.mu.Unlock()
		return b, nil
	}
	g.mu.Unlock()
	var buf bytes.Buffer
	if err := encodeJSON(&buf, build()); err != nil {
		return nil, err
	}
	g.builds.Add(1)
	g.mu.Lock()
	g.key, g.at, g.last = key, now, buf.Bytes()
	g.mu.Unlock()
	return buf.Bytes(), nil
}
