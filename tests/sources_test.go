package tests

import (
	"context"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/internal/sourcetest"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestOutboundMTASTS: Postfix 3.7 with examples/postfix delivers to
// domains the table does not list as their MTA-STS policies require. The
// daemon fetches each policy from an HTTPS policy host (test CA, through
// --https-ca) named by an in-process DNS server; Postfix trusts the MX
// certificates' CA (smtp_tls_CAfile).
//   - enforce, MX certificate for a name the policy's "*.<domain>" matches:
//     delivered, "Verified TLS connection established";
//   - enforce, MX without STARTTLS: deferred, dsn=4.7.4, no MAIL;
//   - enforce, MX whose name is not in the policy's mx list: deferred,
//     "Server certificate not verified", no MAIL;
//   - testing: not enforced, delivered without TLS to an MX without it.
func TestOutboundMTASTS(t *testing.T) {
	harness.RequirePostfix(t)
	ca := harness.NewTestCA(t, "tlspolicyd trusted CA")
	httpsCA := probetest.NewCA(t)
	domains := []string{"good.test", "plain.test", "wrongmx.test", "testing.test"}
	host := sourcetest.NewPolicyHost(t, httpsCA, sourcetest.PolicyHosts(domains...)...)
	policies := map[string]string{
		"good.test":    sourcetest.Policy("enforce", 86400, "*.good.test"),
		"plain.test":   sourcetest.Policy("enforce", 86400, "plain.test"),
		"wrongmx.test": sourcetest.Policy("enforce", 86400, "mx.elsewhere.test"),
		"testing.test": sourcetest.Policy("testing", 86400, "testing.test"),
	}
	host.SetHandler(func(w http.ResponseWriter, r *http.Request) {
		d := strings.TrimPrefix(strings.Split(r.Host, ":")[0], "mta-sts.")
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(policies[d]))
	})
	dns := sourcetest.NewResolver(t)
	for _, d := range domains {
		dns.Add(t, `_mta-sts.`+d+`. 300 IN TXT "v=STSv1; id=1"`)
		dns.Add(t, "mta-sts."+d+". 300 IN A 127.0.0.1")
	}
	caFile := filepath.Join(t.TempDir(), "https-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: httpsCA.Cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	table := filepath.Join(t.TempDir(), "table.yaml")
	writeFile(t, table, "outbound:\n  listed.example: may\n")
	d := harness.StartDaemon(t, daemonBinary(t), table, "--resolver", dns.Addr, "--https-ca", caFile,
		"--mta-sts-port", itoa(host.Port), "--allow-private", "--probe-port", "9")

	type mxCase struct {
		rcpt        string
		mx          *harness.FakeMX
		established string // "" = deferred with reason
		reason      string
	}
	port := harness.FreePort(t, "127.0.0.1")
	// Postfix resolves next hops through the chroot's hosts file (no DNS):
	// it connects to the domain itself. good.test's certificate names
	// mx.good.test, which only the policy's "*.good.test" (answered as
	// match=.good.test) accepts.
	cases := []mxCase{
		{rcpt: "user@good.test", mx: harness.NewTLSFakeMX(t, ca.Issue(t, "mx.good.test"), "127.0.0.31", harness.OnPort(port)), established: "Verified"},
		{rcpt: "user@plain.test", mx: harness.NewFakeMX(t, "127.0.0.32", harness.OnPort(port)), reason: "TLS is required, but was not offered by host plain.test[127.0.0.32]"},
		{rcpt: "user@wrongmx.test", mx: harness.NewTLSFakeMX(t, ca.Issue(t, "wrongmx.test"), "127.0.0.33", harness.OnPort(port)), reason: "Server certificate not verified"},
		{rcpt: "user@testing.test", mx: harness.NewFakeMX(t, "127.0.0.34", harness.OnPort(port)), established: "-"},
	}
	hosts := map[string]string{}
	for _, tc := range cases {
		_, dom, _ := strings.Cut(tc.rcpt, "@")
		hosts[dom] = tc.mx.Host
	}
	pf := harness.NewPostfix(t, harness.PostfixConfig{Socketmap: d.Addr, MXPort: port, Hosts: hosts, CAFile: ca.File})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	qids := make([]string, len(cases))
	for i, tc := range cases {
		qids[i] = send(ctx, t, pf, "sender@origin.example", tc.rcpt)
	}
	for i, tc := range cases {
		t.Run(tc.rcpt, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			qid := qids[i]
			if tc.established == "" {
				r, err := pf.WaitDeferred(ctx, qid, tc.rcpt, 30*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(r.DelayReason, tc.reason) {
					t.Errorf("delay_reason %q, want %q", r.DelayReason, tc.reason)
				}
				if m := tc.mx.Mails(); len(m) != 0 {
					t.Errorf("the MX received MAIL: %+v", m)
				}
				if strings.HasPrefix(tc.reason, "TLS is required") {
					if st := statusLine(pf.Log(), qid, tc.rcpt); !strings.Contains(st, "dsn=4.7.4") {
						t.Errorf("status line %q, want dsn=4.7.4", st)
					}
				}
				return
			}
			if err := pf.WaitGone(ctx, qid, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			got := tc.mx.ReceivedFor(tc.rcpt)
			if len(got) != 1 {
				t.Fatalf("MX received %+v, want one message", got)
			}
			if tc.established == "-" {
				return // testing: delivered as Postfix's own default (may) would
			}
			if !got[0].TLS {
				t.Errorf("delivered without TLS")
			}
			want := tc.established + " TLS connection established to good.test[127.0.0.31]:" + itoa(port)
			if !strings.Contains(pf.Log(), want) {
				t.Errorf("maillog lacks %q", want)
			}
		})
	}
}
