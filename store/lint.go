package store

import (
	"fmt"
	"time"
)

// Lint returns warnings about a valid table: things an administrator
// wants to hear that do not stop the table from loading.
//
//   - an entry whose review_by date has passed (the day after it, UTC);
//   - a testing entry that would change nothing if enforced, because the
//     answer without it is already at least as strict (learned policies
//     are not considered: they change with every probe);
//   - defaults.learn: enforce with a defaults.outbound other than none or
//     may, where learning is skipped (see learnCanRaise);
//   - an empty table (no entry, no inbound rule): a truncated file looks
//     like this, and the daemon refuses it on reload (Defaults.AllowEmpty).
//
// Warnings are sorted by file and line.
func (t *Table) Lint(now time.Time) []*Error {
	var out ErrorList
	warn := func(src Source, format string, args ...any) {
		out = append(out, &Error{Source: src, Msg: fmt.Sprintf(format, args...)})
	}
	for _, s := range []struct {
		name    string
		entries []*Entry
	}{{"outbound", t.Outbound}, {"recipients", t.Recipients}, {"senders", t.Senders}} {
		for _, e := range s.entries {
			if e.ReviewBy.IsZero() || now.Before(e.ReviewBy.AddDate(0, 0, 1)) {
				continue
			}
			note := ""
			if e.Note != "" {
				note = " (note: " + e.Note + ")"
			}
			warn(e.Source, "review_by %s has passed for %s entry %q%s", e.ReviewBy.Format(time.DateOnly), s.name, e.Key, note)
		}
	}
	if d := t.Defaults; d.Learn == LearnEnforce && !learnCanRaise(d.Outbound) {
		warn(d.OutboundSource, "defaults.learn: enforce has no effect with defaults.outbound %q: a learned policy applies only over a default of none or may, which it cannot weaken", d.Outbound.Text)
	}
	if t.Empty() && !t.Defaults.AllowEmpty {
		warn(Source{File: t.root}, "the table is empty (no entries, no inbound rules, no defaults.outbound): a running daemon keeps its old table instead of loading it, unless defaults.allow_empty: true")
	}
	idx, _, err := newIndex(t)
	if err != nil {
		warn(Source{}, "%v", err)
		out.sort()
		return out
	}
	for _, e := range t.Outbound {
		if !e.Testing || e.Policy == nil {
			continue
		}
		var a Answer
		n, _ := idx.find(e.Key, &a)
		var cur *Policy
		var from string
		switch {
		case n.e != nil:
			cur, from = n.e.Policy, fmt.Sprintf("entry %q at %s", n.e.Key, n.e.Source)
		case t.Defaults.Outbound != nil:
			cur, from = t.Defaults.Outbound, fmt.Sprintf("defaults.outbound at %s", t.Defaults.OutboundSource)
		default:
			continue
		}
		// Identical, or e is a bare floor level the current answer meets.
		if cur.Text == e.Policy.Text || (isFloor(e.Policy.Level) && len(e.Policy.Attrs) == 0 && cur.Level.Satisfies(e.Policy.Level)) {
			warn(e.Source, "testing entry %q changes nothing: without it the answer is already %q (%s)", e.Key, cur.Text, from)
		}
	}
	for _, s := range []struct {
		name    string
		entries []*Entry
		m       *keyed
	}{{"recipients", t.Recipients, &idx.rcpt}, {"senders", t.Senders, &idx.snd}} {
		for _, e := range s.entries {
			if !e.Testing || e.Policy == nil {
				continue
			}
			a := resolveTransport(s.m, e.Key)
			if !a.Found {
				continue
			}
			covering := s.m.get(a.Key)
			if covering.Policy.Level.Satisfies(e.Policy.Level) {
				warn(e.Source, "testing %s entry %q changes nothing: entry %q at %s already requires %s", s.name, e.Key, covering.Key, covering.Source, covering.Policy.Level)
			}
		}
	}
	out.sort()
	return out
}

// isFloor reports whether l is one of the levels the tls_policy_<level>
// maps and transports raise to.
func isFloor(l Level) bool { return l == LevelEncrypt || l == LevelVerify || l == LevelSecure }
