package probe

import (
	"context"
	"time"
)

// Func probes one target; (*Prober).Probe is one.
type Func func(ctx context.Context, target string) (*Result, error)

// Event kinds of what the probe cache notices (srccache.Probes).
const (
	// EventLearned: a domain was learned as "encrypt" for the first time
	// (or again after its learned state had lapsed).
	EventLearned = "learned"
	// EventDowngradeRefused: a probe found a learned domain without
	// working STARTTLS; the learned "encrypt" stays until learn_max_age has
	// passed since the last confirmation (STRIPTLS defence). Alert on it.
	EventDowngradeRefused = "learned-downgrade-refused"
	// EventUnlearned: no probe confirmed STARTTLS for learn_max_age (a
	// probe found it missing after that, or the learned state lapsed);
	// the domain is forgotten.
	EventUnlearned = "unlearned"
	// EventLearnedEvicted: the learned records reached their bound and the
	// one confirmed least recently was dropped although learn_max_age had
	// not passed: a learned "encrypt" undone early, which a flood of newly
	// learned domains can cause. Alert on it. (A lapsed record dropped
	// this way is no event: it no longer answered.)
	EventLearnedEvicted = "learned-evicted"
	// EventCorrupt: the cache file was found damaged at start (not JSON,
	// an unknown version, invalid records): it was kept aside, what parsed
	// salvaged, and learned policies may be lost. Target is the file.
	EventCorrupt = "cache-corrupt"
)

// Event is something the probe cache noticed that operators should hear
// about.
type Event struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Target string    `json:"target"`
	Reason string    `json:"reason"`
}

// LearnedRecord is the learned state of one domain: what the cache keeps
// and a fleet shares.
type LearnedRecord struct {
	Domain string `json:"domain"`
	// FirstLearned is when a probe first showed STARTTLS on every
	// reachable MX; LastConfirmed the latest probe that showed it again.
	FirstLearned  time.Time `json:"first_learned"`
	LastConfirmed time.Time `json:"last_confirmed"`
	// LastContradicted is the latest probe that found STARTTLS missing
	// while learned, and ContradictedBy what it found.
	LastContradicted time.Time `json:"last_contradicted,omitzero"`
	ContradictedBy   string    `json:"contradicted_by,omitempty"`
}
