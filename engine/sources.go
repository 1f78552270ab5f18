package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/tlspolicyd/tlspolicyd/sources"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// Resolution steps of the sources (steps 3 and 4 of README's "Resolution
// (`tls_policy`)").
const (
	StepDANE   store.Step = sources.SourceDANE
	StepMTASTS store.Step = sources.SourceMTASTS
)

// Sources decides policies for bare domains the table does not list:
// DANE, then MTA-STS (sources.Manager). The error means "defer".
type Sources interface {
	Resolve(ctx context.Context, domain string) (sources.Decision, error)
}

// SetSources sets the DANE/MTA-STS sources. Call it before serving starts.
func (e *Engine) SetSources(s Sources) { e.sources = s }

// floors are the levels the tls_policy_<level> maps raise answers to.
var floors = map[string]store.Level{
	store.MapPolicyEncrypt: store.LevelEncrypt,
	store.MapPolicyVerify:  store.LevelVerify,
	store.MapPolicySecure:  store.LevelSecure,
}

// ResolveContext resolves key in map mapName: the table's exact and
// parent entries first, then for a bare domain nothing in the table
// lists the sources (DANE, MTA-STS), then learned policies and the
// default. ctx bounds the sources' first lookups.
func (e *Engine) ResolveContext(ctx context.Context, mapName, key string) (store.Answer, error) {
	ans, err := e.Resolve(mapName, key)
	if err != nil || e.sources == nil || ans.Step == store.StepExact || ans.Step == store.StepParent {
		return ans, err
	}
	floor, isPolicy := floors[mapName]
	if !isPolicy && mapName != store.MapPolicy {
		return ans, nil
	}
	domain, ok := sourceDomain(key)
	if !ok {
		return ans, nil
	}
	d, err := e.sources.Resolve(ctx, domain)
	if err != nil {
		return store.Answer{}, fmt.Errorf("%s: %w", domain, err)
	}
	if d.Policy == "" {
		return ans, nil
	}
	data := d.Policy
	why := d.Why
	if floor != 0 {
		p, err := store.ParsePolicy(d.Policy)
		if err != nil {
			return store.Answer{}, fmt.Errorf("%s: %s policy %q: %w", domain, d.Source, d.Policy, err)
		}
		if q := p.Raise(floor); q != p {
			data = q.Text
			why += ", raised to floor " + floor.String()
		}
	}
	return store.Answer{Found: true, Data: data, Step: store.Step(d.Source), Why: why, Testing: ans.Testing}, nil
}

// sourceDomain returns the domain the sources are asked about: a bare
// domain key (not [host], host:port, an address or a .parent key) of at
// least two labels of letters, digits, '-' and '_', the last not all
// digits (an IPv4 address), normalized.
func sourceDomain(key string) (string, bool) {
	k := store.NormalizeKey(key)
	if len(k) > 253 || strings.Count(k, ".") == 0 {
		return "", false
	}
	for _, label := range strings.Split(k, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	if tld := k[strings.LastIndexByte(k, '.')+1:]; strings.Trim(tld, "0123456789") == "" {
		return "", false
	}
	return k, true
}
