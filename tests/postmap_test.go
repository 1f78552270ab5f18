package tests

import (
	"strings"
	"testing"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// keysTable covers every key form of docs/policy-table.md (`[host]:port`,
// `[host]`, `domain:port`, `domain`, `.parent`). bank.example and
// .bank.example answer differently, so a test can tell an exact match from
// the parent walk.
const keysTable = `outbound:
  bank.example: secure match=nexthop:dot-nexthop protocols=>=TLSv1.2
  .bank.example: encrypt
  "[smtp.partner.example]:587": verify
  "[mx2.relay.example]": encrypt
  "mx3.relay.example:2526": verify
  lax.example: may
recipients:
  cfo@partner.example: encrypt
`

// TestPostmapKeys asks the daemon through Postfix's own socketmap client
// (postmap -q … socketmap:inet:127.0.0.1:PORT:MAP) for every key form and
// answer kind, and checks stdout, exit code and stderr as docs/postfix.md's
// "Trying a lookup: postmap -q" table says: OK → data + exit 0; NOTFOUND →
// nothing, exit 1, no "fatal:"; an error (PERM for an unknown map) → exit 1
// with "fatal:" on stderr.
func TestPostmapKeys(t *testing.T) {
	harness.RequirePostfix(t)
	d, _ := startDaemon(t, keysTable, false)
	conf := harness.PostmapConfig(t)

	const secure = "secure match=nexthop:dot-nexthop protocols=>=TLSv1.2"
	tests := []struct {
		name, mapName, key string
		want               string // data printed; "" = NOTFOUND
	}{
		{"exact domain", "tls_policy", "bank.example", secure},
		// Postfix sends the recipient domain's case as written
		// (docs/postfix.md); the server folds it.
		{"upper case", "tls_policy", "BANK.Example", secure},
		{"trailing dot", "tls_policy", "bank.example.", secure},
		// The keys of Postfix's own parent walk.
		{"dot parent key", "tls_policy", ".bank.example", "encrypt"},
		{"dot parent key upper case", "tls_policy", ".BANK.example", "encrypt"},
		{"last walk key misses", "tls_policy", ".example", ""},
		// The server walks the parents itself (transport maps and Exim send
		// one key only).
		{"subdomain via parent walk", "tls_policy", "sub.bank.example", "encrypt"},
		{"deep subdomain via parent walk", "tls_policy", "a.b.bank.example", "encrypt"},
		{"bracket host port", "tls_policy", "[smtp.partner.example]:587", "verify"},
		{"bracket host port upper case", "tls_policy", "[SMTP.Partner.example]:587", "verify"},
		{"bracket host other port misses", "tls_policy", "[smtp.partner.example]:25", ""},
		{"bracket host", "tls_policy", "[mx2.relay.example]", "encrypt"},
		// Bracketed next hops get no parent walk.
		{"bracket subdomain no walk", "tls_policy", "[x.bank.example]", ""},
		{"host port", "tls_policy", "mx3.relay.example:2526", "verify"},
		{"host port other port misses", "tls_policy", "mx3.relay.example:25", ""},
		{"miss", "tls_policy", "nx.example", ""},
		{"may as written", "tls_policy", "lax.example", "may"},
		{"transport address hit", "tls_transport", "cfo@partner.example", "tlspolicyd-encrypt:"},
		{"transport address miss", "tls_transport", "other@partner.example", ""},
		{"transport domain miss", "tls_transport", "partner.example", ""},
		// tls_policy raised to at least the map's level, never lowered.
		{"raise miss to encrypt", "tls_policy_encrypt", "nx.example", "encrypt"},
		{"raise may to encrypt", "tls_policy_encrypt", "lax.example", "encrypt"},
		{"raise miss to verify", "tls_policy_verify", "nx.example", "verify"},
		{"raise encrypt to verify", "tls_policy_verify", "sub.bank.example", "verify"},
		{"raise miss to secure", "tls_policy_secure", "nx.example", "secure"},
		{"encrypt keeps secure", "tls_policy_encrypt", "bank.example", secure},
		{"encrypt keeps encrypt", "tls_policy_encrypt", "sub.bank.example", "encrypt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := query(t, conf, d, tc.mapName, tc.key)
			wantCode := 0
			wantOut := tc.want + "\n"
			if tc.want == "" {
				wantCode, wantOut = 1, ""
			}
			if res.Code != wantCode || res.Stdout != wantOut || res.Stderr != "" {
				t.Errorf("postmap -q %q %s: got %s; want stdout %q, exit %d, empty stderr",
					tc.key, tc.mapName, res, wantOut, wantCode)
			}
		})
	}

	t.Run("unknown map", func(t *testing.T) {
		t.Parallel()
		res := query(t, conf, d, "no_such_map", "bank.example")
		spec := harness.SocketmapSpec(d.Addr, "no_such_map")
		if res.Code != 1 || res.Stdout != "" {
			t.Errorf("postmap -q on an unknown map: got %s; want exit 1, no stdout", res)
		}
		for _, want := range []string{"socketmap server permanent error", "postmap: fatal: table " + spec + ": query error"} {
			if !strings.Contains(res.Stderr, want) {
				t.Errorf("postmap -q on an unknown map: stderr %q lacks %q", res.Stderr, want)
			}
		}
	})
}
