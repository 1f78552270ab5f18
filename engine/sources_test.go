package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/sources"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// fakeSources answers from a map; a domain mapped to "TEMP" fails.
type fakeSources struct {
	answers map[string]sources.Decision
	asked   []string
}

func (f *fakeSources) Resolve(_ context.Context, domain string) (sources.Decision, error) {
	f.asked = append(f.asked, domain)
	d := f.answers[domain]
	if d.Policy == "TEMP" {
		return sources.Decision{}, sources.ErrTemp
	}
	return d, nil
}

type learnAll struct{}

func (learnAll) Learned(string) (string, string, bool) { return "encrypt", "probe", true }

func loadTable(t *testing.T, yml string) *store.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "table.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := store.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The resolution order of README's "Resolution (`tls_policy`)": exact,
// parent, DANE, MTA-STS, learned, default.
func TestResolveSourcesOrder(t *testing.T) {
	s := loadTable(t, "defaults:\n  outbound: may\n  learn: enforce\noutbound:\n  listed.test: encrypt\n  .parent.test: verify\n  pilot.test:\n    policy: secure\n    testing: true\n")
	src := &fakeSources{answers: map[string]sources.Decision{
		"listed.test":   {Source: sources.SourceMTASTS, Policy: "secure match=x servername=hostname"},
		"a.parent.test": {Source: sources.SourceDANE, Policy: "dane-only"},
		"dane.test":     {Source: sources.SourceDANE, Policy: "dane", Why: "DANE: some"},
		"sts.test":      {Source: sources.SourceMTASTS, Policy: "secure match=mx.sts.test servername=hostname"},
		"pilot.test":    {Source: sources.SourceMTASTS, Policy: "secure match=mx.pilot.test servername=hostname"},
		"temp.test":     {Policy: "TEMP"},
	}}
	e := New(s, learnAll{}, nil, nil)
	e.SetSources(src)
	var testing []string
	e.OnTesting = func(en *store.Entry) { testing = append(testing, en.Key) }
	ctx := context.Background()
	for _, c := range []struct {
		m, key, want string
		step         store.Step
	}{
		{store.MapPolicy, "listed.test", "encrypt", store.StepExact},
		{store.MapPolicy, "a.parent.test", "verify", store.StepParent},
		{store.MapPolicy, "dane.test", "dane", StepDANE},
		{store.MapPolicy, "sts.test", "secure match=mx.sts.test servername=hostname", StepMTASTS},
		{store.MapPolicy, "pilot.test", "secure match=mx.pilot.test servername=hostname", StepMTASTS},
		{store.MapPolicy, "unknown.test", "encrypt", store.StepLearned},
		{store.MapPolicyVerify, "dane.test", "dane-only", StepDANE}, // raised: dane → dane-only
		{store.MapPolicyEncrypt, "sts.test", "secure match=mx.sts.test servername=hostname", StepMTASTS},
		{store.MapPolicy, "[sts.test]:25", "may", store.StepDefault},
	} {
		a, err := e.ResolveContext(ctx, c.m, c.key)
		if err != nil || a.Data != c.want || a.Step != c.step {
			t.Errorf("%s %s = %q step %s (%v), want %q step %s", c.m, c.key, a.Data, a.Step, err, c.want, c.step)
		}
	}
	for _, k := range src.asked {
		if k == "listed.test" || k == "a.parent.test" || k == "sts.test:25" {
			t.Errorf("sources asked about %s, which the table decides or is not a bare domain", k)
		}
	}
	// A testing entry is passed over and reported; the source decides.
	if r, err := e.Lookup(ctx, store.MapPolicy, "pilot.test"); err != nil || r.Data != "secure match=mx.pilot.test servername=hostname" {
		t.Errorf("Lookup pilot.test = %+v, %v", r, err)
	}
	if len(testing) != 1 || testing[0] != "pilot.test" {
		t.Errorf("testing entries reported: %v", testing)
	}
	// Fail closed: the sources' error is TEMP.
	if _, err := e.ResolveContext(ctx, store.MapPolicy, "temp.test"); !errors.Is(err, sources.ErrTemp) {
		t.Errorf("temp.test: %v", err)
	}
	r, err := e.Lookup(ctx, store.MapPolicy, "temp.test")
	if err == nil {
		t.Errorf("Lookup of temp.test = %+v, want an error (TEMP)", r)
	}
	if r, err := e.Lookup(ctx, store.MapPolicy, "dane.test"); err != nil || r.Status != socketmap.StatusOK || r.Data != "dane" {
		t.Errorf("Lookup dane.test = %+v, %v", r, err)
	}
}

func TestSourceDomain(t *testing.T) {
	for _, c := range []struct {
		key, want string
		ok        bool
	}{
		{"Example.COM.", "example.com", true},
		{"a-b_c.example", "a-b_c.example", true},
		{"localhost", "", false},
		{".example.com", "", false},
		{"[mx.example.com]", "", false},
		{"example.com:25", "", false},
		{"bob@example.com", "", false},
		{"192.0.2.1", "", false},
		{"a..b", "", false},
		{"exa mple.com", "", false},
	} {
		got, ok := sourceDomain(c.key)
		if got != c.want || ok != c.ok {
			t.Errorf("sourceDomain(%q) = %q, %v", c.key, got, ok)
		}
	}
}
