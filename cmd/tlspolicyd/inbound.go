package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// inboundResult is what query --inbound prints.
type inboundResult struct {
	Action  string            `json:"action"`
	Rule    string            `json:"rule,omitempty"`
	Source  string            `json:"source,omitempty"`
	Matched []inboundMatch    `json:"matched,omitempty"`
	Request map[string]string `json:"request"`
}

type inboundMatch struct {
	Rule    string `json:"rule"`
	Source  string `json:"source"`
	Testing bool   `json:"testing,omitempty"`
	Met     bool   `json:"met"`
	Reason  string `json:"reason,omitempty"`
}

// readRequestFile parses name=value lines up to the first empty line.
func readRequestFile(path string) (map[string]string, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	attrs := map[string]string{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSuffix(sc.Text(), "\r")
		if text == "" {
			break
		}
		k, v, ok := strings.Cut(text, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s:%d: not a name=value line", path, line)
		}
		if _, dup := attrs[k]; dup {
			return nil, fmt.Errorf("%s:%d: attribute %q repeated", path, line, k)
		}
		attrs[k] = v
	}
	return attrs, sc.Err()
}

// postfixProtocols are the encryption_protocol values Postfix 3.7 sends
// (OpenSSL's SSL_get_version names), by the version the table's require:
// spells (tls1.2).
var postfixProtocols = map[string]string{"1": "TLSv1", "1.0": "TLSv1", "1.1": "TLSv1.1", "1.2": "TLSv1.2", "1.3": "TLSv1.3"}

// postfixProtocol returns the encryption_protocol Postfix would send for
// --tls: its own spelling, or the table's (tls1.2, TLS1.2) mapped to it.
// Anything else is refused: a guess would simulate a request Postfix never
// sends.
func postfixProtocol(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	l := strings.ToLower(s)
	v, ok := strings.CutPrefix(l, "tlsv")
	if !ok {
		v, ok = strings.CutPrefix(l, "tls")
	}
	if p := postfixProtocols[v]; ok && p != "" {
		return p, nil
	}
	return "", fmt.Errorf("%q: want what Postfix sends as encryption_protocol: TLSv1.3, TLSv1.2, TLSv1.1 or TLSv1 (\"\" for a connection without TLS)", s)
}

func queryInbound(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit("tlspolicyd query --inbound takes no KEY: describe the request with --sender, --recipient, --client, --tls … or --request FILE", 2)
	}
	attrs := map[string]string{
		"request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
		"client_address": c.String("client"), "client_name": c.String("client-name"),
		"sender": "", "recipient": "", "encryption_protocol": "",
	}
	if path := c.String("request"); path != "" {
		var err error
		if attrs, err = readRequestFile(path); err != nil {
			return cli.Exit(fmt.Sprintf("tlspolicyd query: %v", err), 2)
		}
	}
	set := func(flag, attr string) {
		if c.IsSet(flag) {
			attrs[attr] = c.String(flag)
		}
	}
	set("sender", "sender")
	set("recipient", "recipient")
	set("client", "client_address")
	set("client-name", "client_name")
	if c.IsSet("tls") {
		proto, err := postfixProtocol(c.String("tls"))
		if err != nil {
			return cli.Exit("tlspolicyd query: --tls "+err.Error(), 2)
		}
		attrs["encryption_protocol"] = proto
	}
	set("ccert-fingerprint", "ccert_fingerprint")
	set("ccert-pubkey-fingerprint", "ccert_pubkey_fingerprint")
	if attrs["sender"] == "<>" {
		attrs["sender"] = ""
	}
	if attrs["recipient"] == "" && c.IsSet("recipient") {
		attrs["protocol_state"] = "MAIL"
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	s, err := store.Load(cfg.Table)
	if err != nil {
		return cli.Exit(fmt.Sprintf("tlspolicyd query: policy table %s is invalid:\n%v", cfg.Table, err), 1)
	}
	d, err := engine.New(s, nil, nil, nil).Evaluate(policyd.NewRequest(attrs))
	if err != nil {
		return cli.Exit(fmt.Sprintf("tlspolicyd query: %v", err), 1)
	}
	res := inboundResult{Action: d.Action, Request: attrs}
	if d.Rule != nil {
		res.Rule, res.Source = d.Rule.Name, d.Rule.Source.String()
	}
	for _, m := range d.Matched {
		res.Matched = append(res.Matched, inboundMatch{Rule: m.Rule.Name, Source: m.Rule.Source.String(), Testing: m.Rule.Testing, Met: m.Met, Reason: m.Reason})
	}
	w := c.App.Writer
	if c.Bool("json") {
		return writeJSON(w, res)
	}
	fmt.Fprintf(w, "action=%s\n", res.Action)
	if !c.Bool("explain") {
		return nil
	}
	if len(res.Matched) == 0 {
		fmt.Fprintln(w, "  no inbound rule matches this sender, recipient and client: DUNNO (the rest of smtpd_recipient_restrictions decide)")
	}
	for _, m := range res.Matched {
		mode := "enforced"
		if m.Testing {
			mode = "testing"
		}
		state := "met"
		if !m.Met {
			state = "NOT met: " + m.Reason
		}
		fmt.Fprintf(w, "  rule %q (%s) at %s: %s\n", m.Rule, mode, m.Source, state)
	}
	if res.Rule != "" {
		fmt.Fprintf(w, "  decided by rule %q at %s\n", res.Rule, res.Source)
	}
	return nil
}
