package store

import (
	"errors"
	"fmt"
)

// answers are a policy's OK data for every floor, computed at build time
// so that lookups do not allocate. They depend only on the policy, so
// entries with the same *Policy share one.
type answers struct {
	data   [nFloors]string
	raised [nFloors]bool
}

func newAnswers(p *Policy) *answers {
	a := &answers{}
	for f := range nFloors {
		q := p
		if f > 0 {
			q = p.Raise(floorLevels[f])
		}
		a.data[f] = q.Text
		a.raised[f] = q != p
	}
	return a
}

// outRef is an outbound entry found by a lookup, with its policy's
// answers.
type outRef struct {
	e *Entry
	a *answers
}

// keyed is the entries of a section and the index of their keys.
type keyed struct {
	list []*Entry
	keys keyIndex
}

// get returns the entry with key k (normalized), or nil.
func (s *keyed) get(k string) *Entry {
	if i := s.keys.find(s.list, k); i >= 0 {
		return s.list[i]
	}
	return nil
}

// index holds the lookup structures of a Store. They serve resolution
// and OutboundByKey: a keyIndex lookup
// allocates nothing and costs far less per key than go-memdb
// (BenchmarkResolveExact and BenchmarkMemdbFirst).
type index struct {
	out keyed
	// outAns[i] is the position in answers of the answers of
	// out.list[i]'s policy: 4 bytes per entry instead of a pointer.
	outAns       []uint32
	answers      []*answers
	rcpt         keyed
	snd          keyed
	def          *answers // nil: NOTFOUND
	defSource    Source
	bare         [nFloors]string // data of a NOTFOUND raised to each floor
	learned      [LevelSecure + 1]*answers
	learnEnforce bool
	learnReport  bool
}

// learnCanRaise reports whether a learned "encrypt" is never weaker than
// def, the table's defaults.outbound (nil: NOTFOUND): when def is none or
// may. Any other default already asks for more in some respect (verify,
// secure and fingerprint authenticate the server, dane-only requires
// DANE, dane authenticates with TLSA records), so the learned step is
// skipped and the default answers: the table's answer is never weakened
// (Lint warns that learn: enforce then has no effect).
func learnCanRaise(def *Policy) bool {
	return def == nil || def.Level == LevelNone || def.Level == LevelMay
}

// outbound returns the outbound entry with key k (normalized) and its
// answers, or a zero outRef.
func (idx *index) outbound(k string) outRef {
	i := idx.out.keys.find(idx.out.list, k)
	if i < 0 {
		return outRef{}
	}
	return outRef{idx.out.list[i], idx.answers[idx.outAns[i]]}
}

// newIndex builds the lookup structures of t and returns them with the
// distinct policies of its entries and their use counts, in order of
// first use.
func newIndex(t *Table) (*index, []PolicyUse, error) {
	idx := &index{
		out:          keyed{list: t.Outbound},
		outAns:       make([]uint32, len(t.Outbound)),
		rcpt:         keyed{list: t.Recipients},
		snd:          keyed{list: t.Senders},
		learnEnforce: t.Defaults.Learn == LearnEnforce && learnCanRaise(t.Defaults.Outbound),
		learnReport:  t.Defaults.Learn == LearnReport,
	}
	// The parser's key indexes, if the lists are still those it indexed
	// (it found no duplicates in them); otherwise new ones, which find
	// duplicates below.
	var reused [len(sectionNames)]bool
	for sec, k := range [...]*keyed{sectionOutbound: &idx.out, sectionRecipients: &idx.rcpt, sectionSenders: &idx.snd} {
		if k.keys, reused[sec] = t.keys.reusable(uint8(sec), k.list); !reused[sec] {
			k.keys = *newKeyIndex(len(k.list))
		}
	}
	// Distinct policies: by pointer, which the parser shares between
	// entries with the same policy text; the answers are shared by text
	// as well, for tables whose entries hold separate but equal policies.
	var uses []PolicyUse
	usePos := map[*Policy]int{}
	ansPos := map[string]uint32{}
	use := func(p *Policy) (ans uint32, use int) {
		i, ok := usePos[p]
		if !ok {
			i = len(uses)
			usePos[p] = i
			uses = append(uses, PolicyUse{Policy: p})
		}
		uses[i].Entries++
		a, ok := ansPos[p.Text]
		if !ok {
			a = uint32(len(idx.answers))
			idx.answers = append(idx.answers, newAnswers(p))
			ansPos[p.Text] = a
		}
		return a, i
	}
	// The previous outbound entry's policy: entries mostly repeat a
	// handful of policies, and a pointer comparison is cheaper than the
	// two map lookups of use.
	var lastPol *Policy
	var lastAns uint32
	lastUse := 0
	check := func(section string, e *Entry) error {
		switch {
		case e == nil:
			return fmt.Errorf("store: nil %s entry", section)
		case e.Policy == nil:
			return fmt.Errorf("store: %s entry %q (%s) has no policy", section, e.Key, e.Source)
		case e.Policy.Text == "":
			return fmt.Errorf("store: %s entry %q (%s) has a policy without text", section, e.Key, e.Source)
		case e.Key == "" || e.Key != NormalizeKey(e.Key):
			return fmt.Errorf("store: %s key %q (%s) is not normalized", section, e.Key, e.Source)
		}
		return nil
	}
	for i, e := range t.Outbound {
		if err := check("outbound", e); err != nil {
			return nil, nil, err
		}
		if e.Policy != lastPol {
			lastPol = e.Policy
			lastAns, lastUse = use(e.Policy)
		} else {
			uses[lastUse].Entries++
		}
		idx.outAns[i] = lastAns
		if reused[sectionOutbound] {
			continue
		}
		if first := idx.out.keys.insert(t.Outbound, i); first >= 0 {
			return nil, nil, fmt.Errorf("store: %s: duplicate key %q (first at %s)", e.Source, e.Key, t.Outbound[first].Source)
		}
	}
	for _, s := range []struct {
		sec  uint8
		name string
		k    *keyed
	}{{sectionRecipients, "recipients", &idx.rcpt}, {sectionSenders, "senders", &idx.snd}} {
		for i, e := range s.k.list {
			if err := check(s.name, e); err != nil {
				return nil, nil, err
			}
			if transportData(e.Policy.Level) == "" {
				return nil, nil, fmt.Errorf("store: %s entry %q (%s): level %s has no transport", s.name, e.Key, e.Source, e.Policy.Level)
			}
			use(e.Policy)
			if reused[s.sec] {
				continue
			}
			if first := s.k.keys.insert(s.k.list, i); first >= 0 {
				return nil, nil, fmt.Errorf("store: %s: duplicate key %q (first at %s)", e.Source, e.Key, s.k.list[first].Source)
			}
		}
	}
	names := make(map[string]bool, len(t.Inbound))
	for _, r := range t.Inbound {
		if r == nil || r.Name == "" {
			return nil, nil, errors.New("store: inbound rule without a name")
		}
		if names[r.Name] {
			return nil, nil, fmt.Errorf("store: duplicate inbound rule %q", r.Name)
		}
		names[r.Name] = true
	}
	if t.Defaults.Outbound != nil {
		idx.def = newAnswers(t.Defaults.Outbound)
		idx.defSource = t.Defaults.OutboundSource
	}
	for f := 1; f < nFloors; f++ {
		idx.bare[f] = floorLevels[f].String()
	}
	for l := LevelNone; l <= LevelSecure; l++ {
		idx.learned[l] = newAnswers(plainPolicy(l))
	}
	return idx, uses, nil
}
