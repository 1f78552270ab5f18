package store

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const resolveTable = `defaults:
  outbound: may
  learn: enforce
outbound:
  bank.example: secure match=nexthop:dot-nexthop protocols=>=TLSv1.2
  .bank.example: encrypt
  .b.bank.example:
    policy: verify
    testing: true
  "[mx1.relay.example]:2526": verify
  "[mx2.relay.example]": encrypt
  mx3.relay.example:2526: verify match=hostname
  .relay.example: encrypt ciphers=high
  upper.example: dane
  lawfirm.example:
    policy: secure
    testing: true
  opportunistic.test: may protocols=!SSLv2 servername=hostname
  "[192.0.2.25]": encrypt
recipients:
  cfo@partner.example: encrypt
  t@partner.example:
    policy: verify
    testing: true
  audit.example: verify
  .audit.example: secure
senders:
  compliance@ourcorp.example: encrypt
`

type stubLearner map[string][2]string

func (s stubLearner) Learned(d string) (string, string, bool) {
	v, ok := s[d]
	return v[0], v[1], ok
}

func mustStore(t testing.TB, yaml string) *Store {
	t.Helper()
	tb, err := ParseFile("t.yaml", strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Build(tb)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestResolve(t *testing.T) {
	s := mustStore(t, resolveTable)
	noDefault := mustStore(t, strings.Replace(strings.Replace(resolveTable, "outbound: may", `outbound: ""`, 1), "learn: enforce", "learn: report", 1))
	learner := stubLearner{"learned.test": {"encrypt", "STARTTLS on all 2 MX hosts"}, "broken.test": {"bogus", ""}}
	tests := []struct {
		store   *Store
		mapName string
		key     string
		found   bool
		data    string
		step    Step
		from    string   // Answer.Key
		line    int      // Answer.Source.Line
		testing []string // keys of testing entries passed over
	}{
		// Every key form Postfix sends (docs/postfix.md, "Outbound: what
		// Postfix asks").
		{s, MapPolicy, "bank.example", true, "secure match=nexthop:dot-nexthop protocols=>=TLSv1.2", StepExact, "bank.example", 5, nil},
		{s, MapPolicy, ".example", true, "may", StepDefault, "", 2, nil},
		{s, MapPolicy, "sub.bank.example", true, "encrypt", StepParent, ".bank.example", 6, nil},
		{s, MapPolicy, ".bank.example", true, "encrypt", StepExact, ".bank.example", 6, nil},
		// Nearest parent first: .b.bank.example is testing, passed over.
		{s, MapPolicy, "a.b.bank.example", true, "encrypt", StepParent, ".bank.example", 6, []string{".b.bank.example"}},
		{s, MapPolicy, ".b.bank.example", true, "encrypt", StepParent, ".bank.example", 6, []string{".b.bank.example"}},
		{s, MapPolicy, "[mx1.relay.example]:2526", true, "verify", StepExact, "[mx1.relay.example]:2526", 10, nil},
		{s, MapPolicy, "[mx2.relay.example]", true, "encrypt", StepExact, "[mx2.relay.example]", 11, nil},
		{s, MapPolicy, "mx3.relay.example:2526", true, "verify match=hostname", StepExact, "mx3.relay.example:2526", 12, nil},
		{s, MapPolicy, "mx4.relay.example", true, "encrypt ciphers=high", StepParent, ".relay.example", 13, nil},
		{s, MapPolicy, "UPPER.Example", true, "dane", StepExact, "upper.example", 14, nil},
		{s, MapPolicy, ".Example", true, "may", StepDefault, "", 2, nil},
		{s, MapPolicy, "bank.example.", true, "secure match=nexthop:dot-nexthop protocols=>=TLSv1.2", StepExact, "bank.example", 5, nil},
		{s, MapPolicy, "[192.0.2.25]", true, "encrypt", StepExact, "[192.0.2.25]", 19, nil},
		// Bracketed and :port keys get no parent walk.
		{s, MapPolicy, "[x.relay.example]", true, "may", StepDefault, "", 2, nil},
		{s, MapPolicy, "x.relay.example:2526", true, "may", StepDefault, "", 2, nil},
		// Testing entry: answered as if absent.
		{s, MapPolicy, "lawfirm.example", true, "may", StepDefault, "", 2, []string{"lawfirm.example"}},
		// Learned: bare domains only, learn: enforce only.
		{s, MapPolicy, "learned.test", true, "encrypt", StepLearned, "", 0, nil},
		{s, MapPolicy, ".learned.test", true, "may", StepDefault, "", 2, nil},
		{noDefault, MapPolicy, "learned.test", false, "", StepNone, "", 0, nil},
		{s, MapPolicy, "nothing.test", true, "may", StepDefault, "", 2, nil},
		{noDefault, MapPolicy, "nothing.test", false, "", StepNone, "", 0, nil},
		{noDefault, MapPolicy, "lawfirm.example", false, "", StepNone, "", 0, []string{"lawfirm.example"}},
		{noDefault, MapPolicy, "", false, "", StepNone, "", 0, nil},

		// Floors.
		{s, MapPolicyEncrypt, "bank.example", true, "secure match=nexthop:dot-nexthop protocols=>=TLSv1.2", StepExact, "bank.example", 5, nil},
		{s, MapPolicyEncrypt, "nothing.test", true, "encrypt", StepDefault, "", 2, nil},
		{s, MapPolicyEncrypt, "upper.example", true, "dane-only", StepExact, "upper.example", 14, nil},
		{s, MapPolicyEncrypt, "opportunistic.test", true, "encrypt servername=hostname", StepExact, "opportunistic.test", 18, nil},
		{s, MapPolicyVerify, "mx4.relay.example", true, "verify ciphers=high", StepParent, ".relay.example", 13, nil},
		{s, MapPolicyVerify, "learned.test", true, "verify", StepLearned, "", 0, nil},
		{s, MapPolicySecure, "mx3.relay.example:2526", true, "secure", StepExact, "mx3.relay.example:2526", 12, nil},
		{s, MapPolicySecure, "[mx1.relay.example]:2526", true, "secure", StepExact, "[mx1.relay.example]:2526", 10, nil},
		{s, MapPolicySecure, "lawfirm.example", true, "secure", StepDefault, "", 2, []string{"lawfirm.example"}},
		// NOTFOUND raised gives the plain level.
		{noDefault, MapPolicyEncrypt, "nothing.test", true, "encrypt", StepNone, "", 0, nil},
		{noDefault, MapPolicyVerify, "nothing.test", true, "verify", StepNone, "", 0, nil},
		{noDefault, MapPolicySecure, "[x.example]:25", true, "secure", StepNone, "", 0, nil},

		// Transports: recipients.
		{s, MapTransport, "cfo@partner.example", true, "tlspolicyd-encrypt:", StepExact, "cfo@partner.example", 21, nil},
		{s, MapTransport, "CFO@Partner.Example.", true, "tlspolicyd-encrypt:", StepExact, "cfo@partner.example", 21, nil},
		{s, MapTransport, "cfo+tax@partner.example", true, "tlspolicyd-encrypt:", StepParent, "cfo@partner.example", 21, nil},
		{s, MapTransport, "bob@audit.example", true, "tlspolicyd-verify:", StepParent, "audit.example", 25, nil},
		{s, MapTransport, "bob@x.y.audit.example", true, "tlspolicyd-secure:", StepParent, ".audit.example", 26, nil},
		{s, MapTransport, "audit.example", true, "tlspolicyd-verify:", StepExact, "audit.example", 25, nil},
		{s, MapTransport, "@audit.example", true, "tlspolicyd-verify:", StepExact, "audit.example", 25, nil},
		{s, MapTransport, "x.audit.example", true, "tlspolicyd-secure:", StepParent, ".audit.example", 26, nil},
		{s, MapTransport, "bob@partner.example", false, "", StepNone, "", 0, nil},
		{s, MapTransport, "t@partner.example", false, "", StepNone, "", 0, []string{"t@partner.example"}},
		{s, MapTransport, "", false, "", StepNone, "", 0, nil},
		{s, MapTransport, "compliance@ourcorp.example", false, "", StepNone, "", 0, nil},
		// Senders.
		{s, MapSenderTransport, "compliance@ourcorp.example", true, "tlspolicyd-encrypt:", StepExact, "compliance@ourcorp.example", 28, nil},
		{s, MapSenderTransport, "other@ourcorp.example", false, "", StepNone, "", 0, nil},
		{s, MapSenderTransport, "cfo@partner.example", false, "", StepNone, "", 0, nil},
		{s, MapSenderTransport, "", false, "", StepNone, "", 0, nil},
	}
	for _, tt := range tests {
		a, err := tt.store.Resolve(tt.mapName, tt.key, learner)
		if err != nil {
			t.Errorf("Resolve(%s, %q): %v", tt.mapName, tt.key, err)
			continue
		}
		var testing []string
		for _, e := range a.Testing {
			testing = append(testing, e.Key)
		}
		if a.Found != tt.found || a.Data != tt.data || a.Step != tt.step || a.Key != tt.from || a.Source.Line != tt.line || !slices.Equal(testing, tt.testing) {
			t.Errorf("Resolve(%s, %q) = found %v data %q step %s key %q line %d testing %v\n want found %v data %q step %s key %q line %d testing %v",
				tt.mapName, tt.key, a.Found, a.Data, a.Step, a.Key, a.Source.Line, testing,
				tt.found, tt.data, tt.step, tt.from, tt.line, tt.testing)
		}
		if a.Why == "" {
			t.Errorf("Resolve(%s, %q): empty Why", tt.mapName, tt.key)
		}
		if a.Source.Line != 0 && a.Source.File != "t.yaml" {
			t.Errorf("Resolve(%s, %q): source %v", tt.mapName, tt.key, a.Source)
		}
	}

	a, _ := s.Resolve(MapPolicyVerify, "learned.test", learner)
	if a.Why != "learned: STARTTLS on all 2 MX hosts, raised to floor verify" {
		t.Errorf("learned Why = %q", a.Why)
	}
	a, _ = s.Resolve(MapPolicySecure, "[mx1.relay.example]:2526", nil)
	if a.Why != "exact entry, raised to floor secure" {
		t.Errorf("raised Why = %q", a.Why)
	}
	// learn: report asks the learner (so probes get scheduled) but does
	// not change the answer.
	a, _ = noDefault.Resolve(MapPolicy, "learned.test", learner)
	if a.Found || a.WouldLearn != "encrypt" {
		t.Errorf("learn: report: %+v, want NOTFOUND with WouldLearn encrypt", a)
	}
	if a, _ := noDefault.Resolve(MapPolicy, "bank.example", learner); a.WouldLearn != "" {
		t.Errorf("learn: report asked for a listed domain: %+v", a)
	}
	// Without a learner, learned steps are skipped.
	if a, _ := s.Resolve(MapPolicy, "learned.test", nil); a.Step != StepDefault {
		t.Errorf("nil learner: step %s", a.Step)
	}
	// A learned level Postfix would not accept fails closed: an error, not an answer.
	if a, err := s.Resolve(MapPolicy, "broken.test", learner); err == nil {
		t.Errorf("bogus learned level: answer %+v, want error", a)
	}
	for _, name := range []string{"TLS_POLICY", "tls_policy_may", "tls_policy_dane", "", "tls_policy ", "transport"} {
		if _, err := s.Resolve(name, "bank.example", nil); !errors.Is(err, ErrUnknownMap) {
			t.Errorf("Resolve(%q): error %v, want ErrUnknownMap", name, err)
		}
	}
}

// A learned "encrypt" must never answer weaker than defaults.outbound:
// it applies over none, may and no default, and is skipped for every
// default that asks for more in some respect.
func TestLearnNeverWeakensDefault(t *testing.T) {
	learner := stubLearner{"learned.test": {"encrypt", "STARTTLS on all 2 MX hosts"}}
	for _, tc := range []struct {
		def       string // defaults.outbound; "" = none set
		wantFound bool
		want      string
		step      Step
	}{
		{"", true, "encrypt", StepLearned},
		{"none", true, "encrypt", StepLearned},
		{"may", true, "encrypt", StepLearned},
		{"may ciphers=medium", true, "encrypt", StepLearned},
		{"encrypt protocols=>=TLSv1.2", true, "encrypt protocols=>=TLSv1.2", StepDefault},
		{"dane", true, "dane", StepDefault},
		{"dane-only", true, "dane-only", StepDefault},
		{"verify", true, "verify", StepDefault},
		{"secure match=nexthop", true, "secure match=nexthop", StepDefault},
		{"fingerprint match=" + strings.Repeat("AB:", 31) + "AB", true, "fingerprint match=" + strings.Repeat("AB:", 31) + "AB", StepDefault},
	} {
		t.Run(tc.def, func(t *testing.T) {
			table := "defaults:\n  learn: enforce\n"
			if tc.def != "" {
				table += "  outbound: " + tc.def + "\n"
			}
			s := mustStore(t, table+"outbound:\n  bank.example: secure\n")
			a, err := s.Resolve(MapPolicy, "learned.test", learner)
			if err != nil || a.Found != tc.wantFound || a.Data != tc.want || a.Step != tc.step {
				t.Errorf("Resolve = %+v, %v; want found %v %q at step %s", a, err, tc.wantFound, tc.want, tc.step)
			}
		})
	}
}

func TestStoreReads(t *testing.T) {
	s := mustStore(t, resolveTable+"inbound:\n  - name: r1\n    from: [bank.example]\n    require: tls\n  - name: r2\n    to: [x@ourcorp.example]\n    require: cert\n    testing: true\n")
	e := s.OutboundByKey("BANK.example.")
	if e == nil || e.Key != "bank.example" {
		t.Errorf("OutboundByKey = %v", e)
	}
	if e := s.OutboundByKey("none.example"); e != nil {
		t.Errorf("OutboundByKey(missing) = %v; want nil", e)
	}
	if e := s.OutboundByKey(""); e != nil {
		t.Errorf("OutboundByKey(\"\") = %v", e)
	}
	if e := s.recipientByKey("cfo@partner.example"); e == nil || e.Policy.Level != LevelEncrypt {
		t.Errorf("RecipientByKey = %v", e)
	}
	if e := s.senderByKey("compliance@ourcorp.example"); e == nil {
		t.Error("SenderByKey: nil")
	}
	if e := s.senderByKey("cfo@partner.example"); e != nil {
		t.Errorf("SenderByKey(recipient) = %v", e)
	}
	if rules := s.InboundRules(); len(rules) != 2 || rules[0].Name != "r1" {
		t.Errorf("InboundRules = %v", rules)
	}
	if s.Table() == nil || len(s.Table().Outbound) != 11 {
		t.Errorf("Table() = %v", s.Table())
	}
}

func TestBuildRejectsInconsistentTables(t *testing.T) {
	pol := plainPolicy(LevelEncrypt)
	for name, tb := range map[string]*Table{
		"nil policy":     {Outbound: []*Entry{{Key: "a.example"}}},
		"not normalized": {Outbound: []*Entry{{Key: "A.example", Policy: pol}}},
		"duplicate":      {Outbound: []*Entry{{Key: "a.example", Policy: pol}, {Key: "a.example", Policy: pol}}},
		"no transport":   {Recipients: []*Entry{{Key: "a.example", Policy: plainPolicy(LevelMay)}}},
		"dup recipient":  {Recipients: []*Entry{{Key: "a.example", Policy: pol}, {Key: "a.example", Policy: pol}}},
		"dup rule":       {Inbound: []*InboundRule{{Name: "r"}, {Name: "r"}}},
		"rule no name":   {Inbound: []*InboundRule{{}}},
		"nil entry":      {Senders: []*Entry{nil}},
	} {
		if _, err := Build(tb); err == nil {
			t.Errorf("Build(%s): no error", name)
		}
	}
	if _, err := Build(nil); err == nil {
		t.Error("Build(nil): no error")
	}
	if s, err := Build(&Table{}); err != nil || s == nil {
		t.Errorf("Build(empty) = %v, %v", s, err)
	}
}

func TestLoad(t *testing.T) {
	s, err := Load("testdata/design")
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Resolve(MapPolicy, "thumb.example.org", nil)
	if err != nil || a.Found {
		t.Errorf("no entry, no default: %+v, %v", a, err)
	}
	a, _ = s.Resolve(MapPolicy, "[thumb.example.org]", nil)
	if !strings.HasPrefix(a.Data, "fingerprint match=b6:b4") || a.Source.String() != "testdata/design/postfix/tls_policy:11" {
		t.Errorf("include entry: %+v", a)
	}
	if _, err := Load("testdata/nonexistent"); err == nil {
		t.Error("Load(nonexistent): no error")
	}
}

// TestBuildAfterTableChanged: Build reuses the key index the parser made
// only for the very lists it indexed; a parsed Table changed afterwards
// (an entry replaced, one appended) is indexed anew, duplicates included.
func TestBuildAfterTableChanged(t *testing.T) {
	parse := func() *Table {
		tb, err := ParseFile("t.yaml", strings.NewReader(resolveTable))
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	tb := parse()
	if tb.keys == nil {
		t.Fatal("parsed table without its key index")
	}
	s, err := Build(tb)
	if err != nil {
		t.Fatal(err)
	}
	if e := s.OutboundByKey("upper.example"); e == nil {
		t.Error("unchanged table: upper.example not found")
	}
	if &s.idx.out.keys.slots[0] != &tb.keys.idx[sectionOutbound].slots[0] {
		t.Error("unchanged table: the parser's key index was not reused")
	}

	tb = parse()
	i := slices.IndexFunc(tb.Outbound, func(e *Entry) bool { return e.Key == "upper.example" })
	tb.Outbound[i] = &Entry{Key: "replaced.example", Policy: plainPolicy(LevelSecure)}
	s, err = Build(tb)
	if err != nil {
		t.Fatal(err)
	}
	if e := s.OutboundByKey("replaced.example"); e == nil {
		t.Error("replaced entry not found")
	}
	if e := s.OutboundByKey("upper.example"); e != nil {
		t.Errorf("removed entry found: %+v", e)
	}
	if a, _ := s.Resolve(MapPolicy, "replaced.example", nil); a.Data != "secure" {
		t.Errorf("replaced entry answers %+v", a)
	}
	if &s.idx.out.keys.slots[0] == &tb.keys.idx[sectionOutbound].slots[0] {
		t.Error("changed table: the parser's key index was reused")
	}

	tb = parse()
	tb.Recipients = append(tb.Recipients, &Entry{Key: "cfo@partner.example", Policy: plainPolicy(LevelVerify)})
	if _, err := Build(tb); err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Errorf("appended duplicate: Build error %v", err)
	}
}

// recipientByKey returns the recipients entry with the given key
// (normalized first), or nil.
func (s *Store) recipientByKey(key string) *Entry {
	return s.idx.rcpt.get(NormalizeKey(key))
}

// senderByKey returns the senders entry with the given key (normalized
// first), or nil.
func (s *Store) senderByKey(key string) *Entry {
	return s.idx.snd.get(NormalizeKey(key))
}
