package srccache

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/safetext"
	"github.com/tlspolicyd/tlspolicyd/internal/snapshot"
	"github.com/tlspolicyd/tlspolicyd/probe"
)

// probeCacheV1 is the old probe cache file,
// {"version":1,"saved":…,"entries":[{"last_used","result"}],"learned":[…]},
// each record left to decode on its own so that one malformed record costs
// that record only, not the learned policies beside it.
type probeCacheV1 struct {
	Version int               `json:"version"`
	Entries []json.RawMessage `json:"entries"`
	Learned []json.RawMessage `json:"learned"`
}

type probeEntryV1 struct {
	LastUsed time.Time     `json:"last_used"`
	Result   *probe.Result `json:"result"`
}

// upgradeLearnMaxAge is the learn_max_age the learned records of an old
// file get until Probes.Loaded gives them the one in use: longer than any
// table sets, so that Load drops none the table still keeps in force.
const upgradeLearnMaxAge = 100 * 365 * 24 * time.Hour

// upgradeProbeCacheV1 converts the old probe cache file into records:
// a KindProbe record per result (its last lookup as Used), a KindLearned
// record per learned state (see upgradeLearnMaxAge). Records that do not
// decode or validate are skipped and counted; those expired by now are
// left out. A torn file
// (not complete JSON) gives up the records that parse before the damage,
// and err says what was wrong; err is nil when the file parsed, skipped
// records or not.
func upgradeProbeCacheV1(data []byte, now time.Time) (recs []*Record, skipped int, err error) {
	var f probeCacheV1
	if jerr := json.Unmarshal(data, &f); jerr != nil {
		err = fmt.Errorf("not a complete JSON file: %w", jerr)
		sv := snapshot.SalvageArrays(data, "entries", "learned")
		f = probeCacheV1{Version: 1, Entries: sv["entries"], Learned: sv["learned"]}
	} else if f.Version != 1 {
		return nil, len(f.Entries) + len(f.Learned), fmt.Errorf("probe cache version %d, want 1", f.Version)
	}
	add := func(r *Record) {
		if r.Valid(now) {
			recs = append(recs, r)
		}
	}
	for _, raw := range f.Entries {
		var e probeEntryV1
		if json.Unmarshal(raw, &e) != nil || validResult(e.Result) != nil {
			skipped++
			continue
		}
		add(probeRecord(e.Result, e.LastUsed, DefaultIdleAfter))
	}
	for _, raw := range f.Learned {
		var l probe.LearnedRecord
		if json.Unmarshal(raw, &l) != nil || validLearned(&l) != nil {
			skipped++
			continue
		}
		add(learnedRecord(l, upgradeLearnMaxAge))
	}
	return recs, skipped, err
}

// validResult checks a result read from a file or a fleet peer.
func validResult(r *probe.Result) error {
	if r == nil {
		return errors.New("no result")
	}
	if r.Time.IsZero() {
		return errors.New("no time")
	}
	if key, err := probe.Canonical(r.Target); err != nil {
		return err
	} else if key != r.Target {
		return fmt.Errorf("target %q is not canonical (%q)", safetext.Line(r.Target, 256), key)
	}
	return nil
}

// validLearned checks a learned record read from a file or a fleet peer.
func validLearned(rec *probe.LearnedRecord) error {
	if key, err := probe.Canonical(rec.Domain); err != nil {
		return err
	} else if key != rec.Domain {
		return fmt.Errorf("domain %q is not canonical (%q)", safetext.Line(rec.Domain, 256), key)
	}
	if rec.LastConfirmed.IsZero() {
		return errors.New("no last_confirmed time")
	}
	return nil
}

// validProbeRecord checks the payload of a KindProbe or KindLearned record
// read from a snapshot: its key is the payload's canonical key.
func validProbeRecord(r *Record) error {
	switch r.Kind {
	case KindProbe:
		if err := validResult(r.Probe); err != nil {
			return err
		}
		if r.Probe.Target != r.Domain {
			return fmt.Errorf("probe record %q holds the result of %q", safetext.Line(r.Domain, 256), r.Probe.Target)
		}
	case KindLearned:
		if r.Learned == nil {
			return errors.New("learned record without its learned state")
		}
		if err := validLearned(r.Learned); err != nil {
			return err
		}
		if r.Learned.Domain != r.Domain {
			return fmt.Errorf("learned record %q holds the state of %q", safetext.Line(r.Domain, 256), r.Learned.Domain)
		}
	}
	return nil
}
