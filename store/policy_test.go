package store

import (
	"slices"
	"strings"
	"testing"
)

func TestParseLevel(t *testing.T) {
	names := []string{"none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure"}
	for i, n := range names {
		l, ok := ParseLevel(n)
		if !ok || l != LevelNone+Level(i) || l.String() != n {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", n, l, ok, LevelNone+Level(i))
		}
	}
	for _, bad := range []string{"", "Encrypt", "must", "MAY", "halfdane", "dane_only"} {
		if l, ok := ParseLevel(bad); ok {
			t.Errorf("ParseLevel(%q) = %v, want not ok", bad, l)
		}
	}
	if s := Level(0).String(); s != "invalid" {
		t.Errorf("Level(0).String() = %q", s)
	}
}

func TestSatisfies(t *testing.T) {
	// floor -> levels that satisfy it (the tls_policy_<level> maps' floors).
	want := map[Level][]Level{
		LevelNone:    {LevelNone, LevelMay, LevelEncrypt, LevelDane, LevelDaneOnly, LevelFingerprint, LevelVerify, LevelSecure},
		LevelMay:     {LevelMay, LevelEncrypt, LevelDane, LevelDaneOnly, LevelFingerprint, LevelVerify, LevelSecure},
		LevelEncrypt: {LevelEncrypt, LevelDaneOnly, LevelFingerprint, LevelVerify, LevelSecure},
		LevelVerify:  {LevelDaneOnly, LevelFingerprint, LevelVerify, LevelSecure},
		LevelSecure:  {LevelDaneOnly, LevelFingerprint, LevelSecure},
	}
	for floor, ok := range want {
		for l := LevelNone; l <= LevelSecure; l++ {
			if got := l.Satisfies(floor); got != slices.Contains(ok, l) {
				t.Errorf("%v.Satisfies(%v) = %v", l, floor, got)
			}
		}
	}
}

// sample values valid for each attribute (at the levels that allow it).
var attrSamples = map[string]string{
	"ciphers":          "high",
	"exclude":          "aNULL:MD5",
	"protocols":        ">=TLSv1.2",
	"connection_reuse": "yes",
	"servername":       "hostname",
	"tafile":           "/etc/postfix/ta.pem",
	"match":            "nexthop:dot-nexthop",
}

const fp32 = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"

// TestParsePolicyAttributeMatrix checks every attribute at every level
// against postconf(5) smtp_tls_policy_maps and smtp_tls_policy.c.
func TestParsePolicyAttributeMatrix(t *testing.T) {
	all := []string{"may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure"}
	allowed := map[string][]string{
		"ciphers":          all,
		"exclude":          all,
		"protocols":        all,
		"connection_reuse": all,
		"servername":       all,
		"match":            {"fingerprint", "verify", "secure"},
		"tafile":           {"verify", "secure"},
	}
	for attr, levels := range allowed {
		for l := LevelNone; l <= LevelSecure; l++ {
			val := attrSamples[attr]
			if attr == "match" && l == LevelFingerprint {
				val = fp32
			}
			s := l.String() + " " + attr + "=" + val
			if l == LevelFingerprint && attr != "match" {
				s += " match=" + fp32
			}
			p, err := ParsePolicy(s)
			if ok := slices.Contains(levels, l.String()); ok != (err == nil) {
				t.Errorf("ParsePolicy(%q) error = %v, want allowed=%v", s, err, ok)
				continue
			}
			if err != nil {
				want := `attribute "` + attr + `" is not allowed at level ` + l.String()
				if !strings.HasPrefix(err.Error(), want) {
					t.Errorf("ParsePolicy(%q) error = %q, want prefix %q", s, err, want)
				}
				continue
			}
			if v, _ := p.Attr(attr); v != val || p.Level != l || p.Text != s {
				t.Errorf("ParsePolicy(%q) = %+v", s, p)
			}
		}
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		in      string
		level   Level
		text    string
		attrs   []Attr
		wantErr string
	}{
		{in: "none", level: LevelNone, text: "none"},
		{in: "may", level: LevelMay, text: "may"},
		{in: "encrypt", level: LevelEncrypt, text: "encrypt"},
		{in: "dane", level: LevelDane, text: "dane"},
		{in: "dane-only", level: LevelDaneOnly, text: "dane-only"},
		{in: "verify", level: LevelVerify, text: "verify"},
		{in: "secure", level: LevelSecure, text: "secure"},
		{in: "fingerprint match=" + fp32, level: LevelFingerprint, text: "fingerprint match=" + fp32},
		// Whitespace collapsed, order and case kept; names and levels are
		// case-insensitive as in Postfix.
		{in: "  Secure \t match=nexthop:dot-nexthop\n  protocols=>=TLSv1.2  ", level: LevelSecure,
			text:  "Secure match=nexthop:dot-nexthop protocols=>=TLSv1.2",
			attrs: []Attr{{"match", "nexthop:dot-nexthop"}, {"protocols", ">=TLSv1.2"}}},
		{in: "encrypt CIPHERS=High", level: LevelEncrypt, text: "encrypt CIPHERS=High", attrs: []Attr{{"ciphers", "High"}}},
		// Commas separate attributes, as in Postfix.
		{in: "encrypt,protocols=!SSLv2:!SSLv3, ciphers=medium", level: LevelEncrypt, text: "encrypt,protocols=!SSLv2:!SSLv3, ciphers=medium",
			attrs: []Attr{{"protocols", "!SSLv2:!SSLv3"}, {"ciphers", "medium"}}},
		{in: "encrypt protocols=TLSv1", level: LevelEncrypt, text: "encrypt protocols=TLSv1"},
		{in: "encrypt protocols=<=TLSv1.3:>=0x0303", level: LevelEncrypt, text: "encrypt protocols=<=TLSv1.3:>=0x0303"},
		{in: "encrypt protocols=", level: LevelEncrypt, text: "encrypt protocols="},
		{in: "encrypt ciphers=export", level: LevelEncrypt, text: "encrypt ciphers=export"},
		{in: "encrypt ciphers=null exclude=", level: LevelEncrypt, text: "encrypt ciphers=null exclude="},
		{in: "verify match=hostname:.example.com:mx.example.com tafile=/a tafile=/b", level: LevelVerify,
			text: "verify match=hostname:.example.com:mx.example.com tafile=/a tafile=/b"},
		{in: "fingerprint match=abcdef0123456789abcdef0123456789|" + fp32 + " match=" + fp32, level: LevelFingerprint,
			text: "fingerprint match=abcdef0123456789abcdef0123456789|" + fp32 + " match=" + fp32},
		{in: "secure servername=nexthop connection_reuse=No", level: LevelSecure, text: "secure servername=nexthop connection_reuse=No"},

		{in: "", wantErr: "empty policy"},
		{in: " \t, ", wantErr: "empty policy"},
		{in: "must", wantErr: `unknown level "must" (want none, may, encrypt, dane, dane-only, fingerprint, verify or secure)`},
		{in: "protocols=TLSv1 encrypt", wantErr: `policy "protocols=TLSv1 encrypt" does not start with a level (want none, may, encrypt, dane, dane-only, fingerprint, verify or secure)`},
		{in: "encrypt verify", wantErr: `malformed attribute "verify": want name=value (values contain no whitespace or commas; join lists with ":")`},
		{in: "encrypt =x", wantErr: `malformed attribute "=x": missing attribute name`},
		{in: "encrypt {protocols = TLSv1}", wantErr: `attribute "{protocols": brace-quoted values are not supported (values contain no whitespace or commas; join lists with ":")`},
		{in: "encrypt enable_rpk=yes", wantErr: `unknown attribute "enable_rpk" (Postfix 3.7 knows ciphers, exclude, protocols, match, connection_reuse, tafile, servername)`},
		{in: "encrypt foo=bar", wantErr: `unknown attribute "foo" (Postfix 3.7 knows ciphers, exclude, protocols, match, connection_reuse, tafile, servername)`},
		{in: "none ciphers=high", wantErr: `attribute "ciphers" is not allowed at level none: TLS is disabled (Postfix ignores it)`},
		{in: "encrypt match=nexthop", wantErr: `attribute "match" is not allowed at level encrypt (only at fingerprint, verify, secure)`},
		{in: "dane tafile=/x", wantErr: `attribute "tafile" is not allowed at level dane (only at verify, secure)`},
		{in: "encrypt ciphers=high ciphers=medium", wantErr: `attribute "ciphers" is specified more than once`},
		{in: "encrypt protocols=TLSv1 Protocols=TLSv1.2", wantErr: `attribute "protocols" is specified more than once`},
		{in: "encrypt servername=a.example servername=b.example", wantErr: `attribute "servername" is specified more than once`},
		{in: "encrypt exclude=a exclude=b", wantErr: `attribute "exclude" is specified more than once`},
		{in: "encrypt ciphers=strong", wantErr: `ciphers=strong: unknown cipher grade (want export, low, medium, high or null)`},
		{in: "encrypt ciphers=", wantErr: `attribute "ciphers" has an empty value (want export, low, medium, high or null)`},
		{in: "encrypt protocols=TLSv1.4", wantErr: `protocols=TLSv1.4: unknown protocol "TLSv1.4" (want colon-separated SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, each optionally with "!", or >=VERSION / <=VERSION, e.g. protocols=>=TLSv1.2)`},
		{in: "encrypt protocols=>=SSLv2", wantErr: `protocols=>=SSLv2: unknown protocol ">=SSLv2" (want colon-separated SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, each optionally with "!", or >=VERSION / <=VERSION, e.g. protocols=>=TLSv1.2)`},
		{in: "encrypt protocols=>TLSv1.2", wantErr: `protocols=>TLSv1.2: unknown protocol ">TLSv1.2" (want colon-separated SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, each optionally with "!", or >=VERSION / <=VERSION, e.g. protocols=>=TLSv1.2)`},
		{in: "encrypt servername=", wantErr: `attribute "servername" has an empty value (want a host name, "hostname" or "nexthop")`},
		{in: "encrypt servername=-bad.example", wantErr: `servername=-bad.example: invalid host name: label "-bad" starts or ends with "-"`},
		{in: "encrypt connection_reuse=maybe", wantErr: `connection_reuse=maybe: want yes or no`},
		{in: "verify tafile=", wantErr: `attribute "tafile" has an empty value (want a trust-anchor file name)`},
		{in: "verify match=", wantErr: `attribute "match" has an empty value (want colon-separated strategies or names, e.g. match=nexthop:dot-nexthop)`},
		{in: "secure match=nexthop:*.example", wantErr: `match=nexthop:*.example: "*.example" is neither hostname, nexthop, dot-nexthop nor a domain name: invalid character '*'`},
		{in: "fingerprint", wantErr: `level fingerprint requires match= with the certificate or public-key fingerprint(s), e.g. match=AB:CD:…|12:34:…`},
		{in: "fingerprint match=|", wantErr: `attribute "match" has an empty value (want "|"-separated fingerprints)`},
		{in: "fingerprint match=AB:CD", wantErr: `match=AB:CD: fingerprint "AB:CD": 2 bytes; a digest has 16 (md5) to 64 (sha512) bytes`},
		{in: "fingerprint match=nexthop", wantErr: `match=nexthop: fingerprint "nexthop": want hex digit pairs, optionally separated by ":"`},
		{in: "fingerprint match=" + fp32 + ":", wantErr: `match=` + fp32 + `:: fingerprint "` + fp32 + `:": trailing ":"`},
	}
	for _, tt := range tests {
		p, err := ParsePolicy(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParsePolicy(%q) error = %v\n want %s", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", tt.in, err)
			continue
		}
		if p.Level != tt.level || p.Text != tt.text || p.String() != tt.text {
			t.Errorf("ParsePolicy(%q) = level %v text %q; want %v %q", tt.in, p.Level, p.Text, tt.level, tt.text)
		}
		if tt.attrs != nil && !slices.Equal(p.Attrs, tt.attrs) {
			t.Errorf("ParsePolicy(%q) attrs = %v, want %v", tt.in, p.Attrs, tt.attrs)
		}
	}
}

func TestRaise(t *testing.T) {
	tests := []struct {
		in    string
		floor Level
		want  string // "" = unchanged (same pointer)
	}{
		{"none", LevelEncrypt, "encrypt"},
		{"may", LevelEncrypt, "encrypt"},
		// Opportunistic ciphers/protocols/exclude would override
		// smtp_tls_mandatory_*: dropped. connection_reuse, servername kept.
		{"may ciphers=export protocols=!SSLv2 exclude=x connection_reuse=yes servername=hostname", LevelEncrypt, "encrypt connection_reuse=yes servername=hostname"},
		{"encrypt", LevelEncrypt, ""},
		{"encrypt protocols=>=TLSv1.2", LevelVerify, "verify protocols=>=TLSv1.2"},
		{"encrypt ciphers=high", LevelSecure, "secure ciphers=high"},
		// dane never loses its TLSA authentication: dane-only.
		{"dane", LevelEncrypt, "dane-only"},
		{"dane protocols=>=TLSv1.2", LevelVerify, "dane-only protocols=>=TLSv1.2"},
		{"dane", LevelSecure, "dane-only"},
		{"dane", LevelMay, ""},
		{"dane-only", LevelSecure, ""},
		{"fingerprint match=" + fp32, LevelSecure, ""},
		{"verify", LevelEncrypt, ""},
		{"verify match=hostname tafile=/ta", LevelVerify, ""},
		// secure's default match is stronger than verify's patterns.
		{"verify match=hostname:mx.example tafile=/ta ciphers=high", LevelSecure, "secure tafile=/ta ciphers=high"},
		{"secure match=nexthop", LevelSecure, ""},
		{"may", LevelMay, ""},
		{"none", LevelMay, "may"},
		{"secure", LevelNone, ""},
		// Floors that no map asks for fail closed: treated as secure.
		{"verify", LevelFingerprint, "secure"},
		{"encrypt", Level(0), "secure"},
	}
	for _, tt := range tests {
		p, err := ParsePolicy(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		q := p.Raise(tt.floor)
		if tt.want == "" {
			if q != p {
				t.Errorf("%q.Raise(%v) = %q, want unchanged", tt.in, tt.floor, q.Text)
			}
			continue
		}
		if q.Text != tt.want {
			t.Errorf("%q.Raise(%v) = %q, want %q", tt.in, tt.floor, q.Text, tt.want)
		}
		// The raised policy must itself be valid for Postfix and satisfy the floor.
		r, err := ParsePolicy(q.Text)
		if err != nil {
			t.Errorf("%q.Raise(%v) = %q, which does not parse: %v", tt.in, tt.floor, q.Text, err)
		} else if r.Level != q.Level || !slices.Equal(r.Attrs, q.Attrs) {
			t.Errorf("%q.Raise(%v): Text %q disagrees with %v %v", tt.in, tt.floor, q.Text, q.Level, q.Attrs)
		}
		if f := tt.floor; f == LevelEncrypt || f == LevelVerify || f == LevelSecure {
			if !q.Level.Satisfies(f) {
				t.Errorf("%q.Raise(%v) = %v, does not satisfy the floor", tt.in, f, q.Level)
			}
		}
	}
}

// TestCollapseSpace: the policy text Postfix is answered has every run of
// whitespace as one space, nothing around it; a text already in that form
// is returned as is (the common case, without an allocation).
func TestCollapseSpace(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"encrypt", "encrypt"},
		{"secure match=nexthop", "secure match=nexthop"},
		{"encrypt,ciphers=high", "encrypt,ciphers=high"},
		{" encrypt", "encrypt"},
		{"encrypt ", "encrypt"},
		{"encrypt  ciphers=high", "encrypt ciphers=high"},
		{"encrypt\tciphers=high", "encrypt ciphers=high"},
		{"encrypt \n\t ciphers=high\r\n", "encrypt ciphers=high"},
		{"encrypt\vx\fy", "encrypt x y"},
		{"   ", ""},
		{"", ""},
	} {
		if got := collapseSpace(tt.in); got != tt.want {
			t.Errorf("collapseSpace(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(10, func() { collapseSpace("secure match=nexthop:dot-nexthop") }); n != 0 {
		t.Errorf("collapseSpace of a clean text: %v allocations, want 0", n)
	}
}
