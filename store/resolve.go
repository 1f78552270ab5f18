package store

import (
	"errors"
	"fmt"
	"strings"
)

// Map names (docs/policy-table.md). Postfix sends the name exactly as
// configured, case kept, so they are compared exactly.
const (
	MapPolicy          = "tls_policy"           // smtp_tls_policy_maps
	MapPolicyEncrypt   = "tls_policy_encrypt"   // tls_policy raised to at least encrypt
	MapPolicyVerify    = "tls_policy_verify"    // tls_policy raised to at least verify
	MapPolicySecure    = "tls_policy_secure"    // tls_policy raised to at least secure
	MapTransport       = "tls_transport"        // transport_maps, keyed by recipient
	MapSenderTransport = "tls_sender_transport" // sender_dependent_default_transport_maps
)

// ErrUnknownMap is returned by Resolve for a map name it does not serve;
// the socketmap server answers it with PERM.
var ErrUnknownMap = errors.New("unknown map")

// Step names the resolution step that decided an answer.
type Step string

// Resolution steps.
const (
	StepExact   Step = "exact"   // the key's own entry
	StepParent  Step = "parent"  // a covering entry: .parent, or the domain of an address
	StepLearned Step = "learned" // the probe cache (defaults.learn: enforce)
	StepDefault Step = "default" // defaults.outbound
	StepNone    Step = "none"    // nothing: NOTFOUND, or the bare floor level
)

// Learner gives the policy learned from the probe cache for an unlisted bare
// domain (README: `defaults.learn`, under "Testing a partner before
// enforcing"). level is a Postfix level name; why says what the probe found,
// for query --explain.
type Learner interface {
	Learned(domain string) (level string, why string, ok bool)
}

// Answer is the result of one lookup.
type Answer struct {
	Found   bool   // false: NOTFOUND
	Data    string // the OK data
	Step    Step
	Key     string   // the table key that decided; "" for learned, default, none
	Source  Source   // where that entry (or defaults.outbound) is written
	Testing []*Entry // testing entries passed over, nearest first
	Why     string   // one line for query --explain
	// WouldLearn is set with defaults.learn: report when the learner
	// knows a level for a bare domain nothing in the table decides: the
	// level learn: enforce would answer. The answer itself ignores it.
	WouldLearn string
}

// Floors: index 0 is tls_policy itself, then the tls_policy_<level> maps.
const nFloors = 4

var floorLevels = [nFloors]Level{0, LevelEncrypt, LevelVerify, LevelSecure}

// transportData is the tls_transport answer for a level: the Postfix
// transport defined in examples/postfix/master.cf.
func transportData(l Level) string {
	switch l {
	case LevelEncrypt:
		return "tlspolicyd-encrypt:"
	case LevelVerify:
		return "tlspolicyd-verify:"
	case LevelSecure:
		return "tlspolicyd-secure:"
	}
	return ""
}

// why texts, indexed by step, floor and whether the answer was raised;
// built once so that answers do not allocate.
var whyText = func() (w [5][nFloors][2]string) {
	base := [5]string{
		"exact entry",
		"nearest .parent entry",
		"", // learned: the learner's text
		"defaults.outbound",
		"no entry and no defaults.outbound",
	}
	for s := range base {
		for f := range nFloors {
			w[s][f][0] = base[s]
			if f > 0 {
				w[s][f][1] = base[s] + ", raised to floor " + floorLevels[f].String()
			}
		}
	}
	return w
}()

const (
	whyExact = iota
	whyParent
	whyLearned
	whyDefault
	whyNone
)

func raisedIdx(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Resolve answers key on map mapName (docs/policy-table.md, "How a lookup is
// answered"). l may be nil (no learned policies); it is asked only for bare
// domains no entry decides, and only with defaults.learn enforce (the answer)
// or report (Answer.WouldLearn). The only error besides ErrUnknownMap is a
// learned level that is not a Postfix level; callers answer every error with
// TEMP so that mail is deferred, never sent weaker.
func (s *Store) Resolve(mapName, key string, l Learner) (Answer, error) {
	switch mapName {
	case MapPolicy:
		return s.idx.resolvePolicy(key, 0, l)
	case MapPolicyEncrypt:
		return s.idx.resolvePolicy(key, 1, l)
	case MapPolicyVerify:
		return s.idx.resolvePolicy(key, 2, l)
	case MapPolicySecure:
		return s.idx.resolvePolicy(key, 3, l)
	case MapTransport:
		return resolveTransport(&s.idx.rcpt, key), nil
	case MapSenderTransport:
		return resolveTransport(&s.idx.snd, key), nil
	}
	return Answer{}, fmt.Errorf("%w %q", ErrUnknownMap, mapName)
}

// isBareDomain reports whether a normalized key gets the parent walk: a
// domain or .domain, not [host], host:port or an address.
func isBareDomain(k string) bool {
	return k != "" && k[0] != '[' && strings.IndexByte(k, ':') < 0 && strings.IndexByte(k, '@') < 0
}

// find does steps 1 and 2 of tls_policy resolution: the exact key, then
// for a bare domain or .domain the .parent entries, nearest first.
// Testing entries are passed over and appended to a.Testing.
func (idx *index) find(k string, a *Answer) (outRef, int) {
	if n := idx.outbound(k); n.e != nil {
		if !n.e.Testing {
			return n, whyExact
		}
		a.Testing = append(a.Testing, n.e)
	}
	if !isBareDomain(k) {
		return outRef{}, 0
	}
	for i := 1; i < len(k); i++ {
		if k[i] != '.' {
			continue
		}
		if n := idx.outbound(k[i:]); n.e != nil {
			if !n.e.Testing {
				return n, whyParent
			}
			a.Testing = append(a.Testing, n.e)
		}
	}
	return outRef{}, 0
}

func (idx *index) resolvePolicy(key string, f int, l Learner) (Answer, error) {
	k := NormalizeKey(key)
	var a Answer
	if n, why := idx.find(k, &a); n.e != nil {
		a.Found, a.Data, a.Key, a.Source = true, n.a.data[f], n.e.Key, n.e.Source
		a.Step = StepExact
		if why == whyParent {
			a.Step = StepParent
		}
		a.Why = whyText[why][f][raisedIdx(n.a.raised[f])]
		return a, nil
	}
	if idx.learnReport && l != nil && isBareDomain(k) && k[0] != '.' {
		// Asked so that the probe cache schedules probes and records what
		// it would learn; the answer does not change.
		if name, _, ok := l.Learned(k); ok {
			a.WouldLearn = name
		}
	}
	if idx.learnEnforce && l != nil && isBareDomain(k) && k[0] != '.' {
		if name, why, ok := l.Learned(k); ok {
			lv, ok := ParseLevel(name)
			if !ok {
				return Answer{}, fmt.Errorf("learned policy for %q: unknown level %q", k, name)
			}
			n := idx.learned[lv]
			a.Found, a.Data, a.Step = true, n.data[f], StepLearned
			a.Why = "learned: " + why
			if n.raised[f] {
				a.Why += ", raised to floor " + floorLevels[f].String()
			}
			return a, nil
		}
	}
	if n := idx.def; n != nil {
		a.Found, a.Data, a.Step, a.Source = true, n.data[f], StepDefault, idx.defSource
		a.Why = whyText[whyDefault][f][raisedIdx(n.raised[f])]
		return a, nil
	}
	a.Step = StepNone
	if f > 0 {
		a.Found, a.Data = true, idx.bare[f]
	}
	a.Why = whyText[whyNone][f][raisedIdx(f > 0)]
	return a, nil
}

// resolveTransport answers tls_transport / tls_sender_transport: the key
// is an address (or a bare domain, or @domain); entries match the exact
// address, the address without a +extension, its domain, then .parent
// entries of the domain, nearest first. Nothing covering it: NOTFOUND.
//
// The +extension step exists because Postfix sends the address as written
// and cfo+x@partner.example is, with the usual recipient_delimiter, the
// same mailbox as cfo@partner.example; it can only add enforcement.
func resolveTransport(m *keyed, key string) Answer {
	k := NormalizeKey(key)
	var a Answer
	a.Step = StepNone
	if k == "" {
		a.Why = "empty address"
		return a
	}
	local, domain := "", k
	if i := strings.LastIndexByte(k, '@'); i >= 0 {
		local, domain = k[:i], k[i+1:]
	}
	try := func(cand string, step Step) bool {
		e := m.get(cand)
		if e == nil {
			return false
		}
		if e.Testing {
			a.Testing = append(a.Testing, e)
			return false
		}
		a.Found, a.Data, a.Step, a.Key, a.Source = true, transportData(e.Policy.Level), step, e.Key, e.Source
		if step == StepExact {
			a.Why = "exact entry"
		} else {
			a.Why = "covering domain entry"
		}
		return true
	}
	if local != "" {
		if try(k, StepExact) {
			return a
		}
		if j := strings.IndexByte(local, '+'); j > 0 && try(local[:j]+"@"+domain, StepParent) {
			a.Why = "entry for the address without its +extension"
			return a
		}
	}
	if domain == "" {
		a.Why = "no entry covers this address"
		return a
	}
	step := StepParent
	if local == "" {
		step = StepExact
	}
	if try(domain, step) {
		return a
	}
	for i := 1; i < len(domain); i++ {
		if domain[i] == '.' && try(domain[i:], StepParent) {
			return a
		}
	}
	a.Why = "no entry covers this address"
	return a
}
