package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// lookupCase is one line of a loadgen -cases file.
type lookupCase struct {
	Key      string `json:"key"`
	Req      string `json:"req,omitempty"`
	Want     string `json:"want,omitempty"`
	Prefix   string `json:"prefix,omitempty"`
	Contains string `json:"contains,omitempty"`
	Next     string `json:"next,omitempty"`
}

// Lookup kinds.
const (
	kindExact  = "exact"
	kindParent = "parent"
	kindMiss   = "miss"
)

// lookup is a socketmap key with its answer in both table variants and
// its redis answer (redis holds the table's keys with their policies).
type lookup struct {
	kind     string
	key      string
	old, new string // socketmap replies with table variant 0 and 1
	redis    string // redis GET reply with the variant-0 keys loaded
}

// genLookup draws one lookup of the given kind. Keys are sent as Postfix
// sends them: some in upper case, some with a trailing dot, .parent keys
// too.
func genLookup(r *rand.Rand, s tableSpec, kind string) lookup {
	switch kind {
	case kindExact:
		i := r.IntN(s.nExact())
		k := exactKey(i)
		l := lookup{kind: kind, key: k, old: "OK " + exactPolicy(i, 0), new: "OK " + exactPolicy(i, 1), redis: exactPolicy(i, 0)}
		switch r.IntN(10) {
		case 0:
			l.key, l.redis = strings.ToUpper(k), "(nil)"
		case 1:
			if !strings.HasPrefix(k, "[") && !strings.Contains(k, ":") {
				l.key, l.redis = k+".", "(nil)"
			}
		}
		return l
	case kindParent:
		j := r.IntN(s.nParent())
		var k string
		switch r.IntN(4) {
		case 0:
			k = fmt.Sprintf("mx%d.p%d.example", r.IntN(10), j)
		case 1:
			k = fmt.Sprintf("a.b.c.p%d.example", j)
		case 2:
			k = fmt.Sprintf(".b.p%d.example", j) // a .parent key Postfix sends itself
		default:
			k = fmt.Sprintf("Mail.P%d.Example", j)
		}
		return lookup{kind: kind, key: k, old: "OK " + parentPolicy(j, 0), new: "OK " + parentPolicy(j, 1), redis: "(nil)"}
	default:
		n := r.IntN(1 << 30)
		var k string
		switch r.IntN(4) {
		case 0:
			k = fmt.Sprintf("m%d.nowhere.example", n)
		case 1:
			k = fmt.Sprintf("www.s%d.example", r.IntN(s.nExact())) // an exact entry does not cover subdomains
		case 2:
			k = fmt.Sprintf("[mx.m%d.example]:25", n) // no parent walk for next-hops with a port
		default:
			k = fmt.Sprintf("m%d.example.net", n)
		}
		return lookup{kind: kind, key: k, old: "NOTFOUND ", new: "OK " + newDefault, redis: "(nil)"}
	}
}

// genLookups draws n lookups: mixed (half exact, a quarter parent walks, a
// quarter misses) when kind is "", else all of one kind.
func genLookups(seed uint64, s tableSpec, n int, kind string) []lookup {
	r := rand.New(rand.NewPCG(seed, 0x7e57))
	out := make([]lookup, n)
	for i := range out {
		k := kind
		if k == "" {
			switch x := r.IntN(4); {
			case x < 2:
				k = kindExact
			case x == 2:
				k = kindParent
			default:
				k = kindMiss
			}
		}
		out[i] = genLookup(r, s, k)
	}
	return out
}
