package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
)

// policyCase is a policy delegation request with its expected reply.
type policyCase struct {
	req              string
	want             string // exact reply, or
	prefix, contains string
}

// genPolicyCases draws n policy delegation requests against rules r0 …
// r<s.Rules-1>: a sixth match no rule; the others match one rule each,
// unmet per cent of them failing its requirement (the benchmark's 50: about
// 40 % of all requests deferred, rejected or given a PREPEND, each logged
// and an event).
func genPolicyCases(seed uint64, s tableSpec, n, unmet int) []policyCase {
	r := rand.New(rand.NewPCG(seed, 0x901c))
	out := make([]policyCase, n)
	for i := range out {
		a := policyAttrs{
			clientAddr: fmt.Sprintf("192.0.2.%d", 1+r.IntN(250)),
			clientName: "unknown",
			helo:       "mx.example.net",
			sender:     fmt.Sprintf("alice@nobody%d.example", r.IntN(1<<20)),
			recipient:  "bob@ourcorp.example",
			instance:   fmt.Sprintf("%x.%x.%x.0", r.Uint32()&0xffff, r.Uint32(), i),
		}
		met := r.IntN(100) >= unmet
		j := r.IntN(max(s.Rules, 1))
		kind := r.IntN(nRuleKinds + 1)
		if s.Rules == 0 {
			kind = nRuleKinds
		}
		// The rule kinds are r mod 5; pick j of the drawn kind.
		if kind < nRuleKinds {
			j = j - j%nRuleKinds + kind
			if j >= s.Rules {
				j -= nRuleKinds
			}
			if j < 0 {
				kind = nRuleKinds
			}
		}
		pc := policyCase{}
		unmet := func(code string) {
			pc.prefix, pc.contains = "action="+code+" ", fmt.Sprintf("(rule r%d)", j)
		}
		switch kind {
		case ruleFrom:
			a.sender = fmt.Sprintf("alice@i%d.in.example", j)
			if met {
				a.tls = "TLSv1.2"
			} else {
				unmet("450 4.7.10")
			}
		case ruleFromParent:
			a.sender = fmt.Sprintf("Bob@MX.i%d.in.example", j)
			if met {
				a.tls = "TLSv1.3"
			} else {
				a.tls = "TLSv1"
				unmet("550 5.7.10")
			}
		case ruleTo:
			a.recipient = fmt.Sprintf("legal%d@ourcorp.example", j)
			if met {
				a.tls = "TLSv1.3"
			} else {
				a.tls = "TLSv1.2"
				unmet("450 4.7.10")
			}
		case ruleClientCIDR:
			a.clientAddr = fmt.Sprintf("10.%d.%d.%d", j>>8&255, j&255, 1+r.IntN(254))
			a.tls = "TLSv1.3"
			if met {
				a.ccert = ruleFingerprint(j + 1) // any certificate
			} else {
				pc.prefix = fmt.Sprintf("action=PREPEND X-TLS-Policy: would defer (rule r%d)", j)
			}
		case ruleClientName:
			a.clientName = fmt.Sprintf("mx%d.c%d.in.example", r.IntN(3), j)
			a.tls = "TLSv1.3"
			if met {
				a.ccert = ruleFingerprint(j)
			} else {
				a.ccert = ruleFingerprint(j + 1)
				unmet("450 4.7.10")
			}
		default:
			if r.IntN(2) == 0 {
				a.tls = "TLSv1.3"
			}
		}
		if pc.prefix == "" {
			pc.want = "action=DUNNO"
		}
		pc.req = a.request()
		out[i] = pc
	}
	return out
}

// policyAttrs are the attributes of a generated request that vary.
type policyAttrs struct {
	clientAddr, clientName, helo, sender, recipient, instance string
	tls, ccert                                                string
}

// request renders a's request with the 29 attributes Postfix 3.7 sends at
// RCPT, in its order (examples/requests/), without the final empty line.
func (a policyAttrs) request() string {
	cipher, keysize := "", "0"
	switch a.tls {
	case "TLSv1.3":
		cipher, keysize = "TLS_AES_256_GCM_SHA384", "256"
	case "":
	default:
		cipher, keysize = "ECDHE-RSA-AES256-GCM-SHA384", "256"
	}
	pubkey := ""
	if a.ccert != "" {
		// A key no rule lists (from
		// examples/requests/postfix37-rcpt-tls12-client-cert.txt).
		pubkey = "7F:D3:0D:B2:D6:D3:F8:42:53:18:30:26:88:0D:8E:8B:3D:F1:FB:F0:3B:9D:AE:08:1F:BB:D3:CC:BF:D5:B8:1A"
	}
	return "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n" +
		"client_address=" + a.clientAddr + "\nclient_name=" + a.clientName + "\nclient_port=36696\n" +
		"reverse_client_name=" + a.clientName + "\nserver_address=127.0.0.1\nserver_port=25\n" +
		"helo_name=" + a.helo + "\nsender=" + a.sender + "\nrecipient=" + a.recipient + "\n" +
		"recipient_count=0\nqueue_id=\ninstance=" + a.instance + "\nsize=0\netrn_domain=\nstress=\n" +
		"sasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\n" +
		"ccert_fingerprint=" + a.ccert + "\nccert_pubkey_fingerprint=" + pubkey + "\n" +
		"encryption_protocol=" + a.tls + "\nencryption_cipher=" + cipher + "\nencryption_keysize=" + keysize + "\n" +
		"policy_context=\n"
}

// writeCases writes a loadgen -cases file.
func writeCases(name string, cases []lookupCase) error {
	return writeFile(name, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<16)
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
		for i := range cases {
			if err := enc.Encode(&cases[i]); err != nil {
				return err
			}
		}
		return bw.Flush()
	})
}
