// Package srccache is the daemon's cache of what it learned about
// destinations from outside the policy table (MTA-STS policies, DANE
// results, probe results, learned policies) and of the monitor's schedule:
// one go-memdb database with records indexed by kind and key, by domain,
// by next refresh time (the one refresh Scheduler walks it) and by expiry
// (eviction), written in transactions, bounded per kind, and snapshotted
// to disk atomically.
package srccache

import (
	"time"

	"github.com/tlspolicyd/tlspolicyd/dane"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/probe"
)

// Kind says what a record holds; each kind has its own payload field.
type Kind string

// Kinds.
const (
	KindMTASTS  Kind = "mta-sts"
	KindDANE    Kind = "dane"
	KindProbe   Kind = "probe"   // Domain is the probe target (probe.Canonical)
	KindLearned Kind = "learned" // Domain is the bare domain
	KindWatch   Kind = "watch"   // Domain is the monitored key
)

// Record is one cached fact about a domain (Domain is the key of every
// kind: a domain, a probe target or a monitored key). Records are immutable once
// Put: a change is a new Record replacing the old one.
type Record struct {
	Kind    Kind         `json:"kind"`
	Domain  string       `json:"domain"`            // lower case, no trailing dot
	Fetched time.Time    `json:"fetched"`           // last successful fetch
	Checked time.Time    `json:"checked"`           // last attempt, successful or not
	Expires time.Time    `json:"expires"`           // not used from then on
	Refresh time.Time    `json:"refresh"`           // when the scheduler looks at it again
	Error   string       `json:"error,omitempty"`   // the last attempt's error, "" if it succeeded
	Temp    bool         `json:"temp,omitempty"`    // the answer is "defer" (DANE records exist but the lookup failed)
	Answer  string       `json:"answer,omitempty"`  // the Postfix policy this record gives; "" for none
	Why     string       `json:"why,omitempty"`     // one line saying why, for query --explain
	MTASTS  *MTASTS      `json:"mta_sts,omitempty"` // KindMTASTS
	DANE    *dane.Result `json:"dane,omitempty"`    // KindDANE; nil when no lookup has succeeded
	// Used is the last lookup of the key known when the record was written.
	Used    time.Time            `json:"used,omitzero"`
	Probe   *probe.Result        `json:"probe,omitempty"`   // KindProbe
	Learned *probe.LearnedRecord `json:"learned,omitempty"` // KindLearned
	Watch   *Watch               `json:"watch,omitempty"`   // KindWatch
}

// MTASTS is an MTA-STS record: the TXT id and the policy it named. A nil
// Policy records that the domain has no usable policy (no TXT record, or
// no policy could be fetched and none was cached).
type MTASTS struct {
	ID     string         `json:"id,omitempty"`
	Policy *mtasts.Policy `json:"policy,omitempty"`
}

// Valid reports whether the record may still be used at now.
func (r *Record) Valid(now time.Time) bool { return r != nil && now.Before(r.Expires) }
