package engine

import (
	"fmt"
	"strings"

	"github.com/tlspolicyd/tlspolicyd/store"
)

// RuleResult is one inbound rule that matched a request, and whether the
// request met its requirement.
type RuleResult struct {
	Rule   *store.InboundRule
	Met    bool
	Reason string // why it is unmet, for logs, events and --explain
}

// Decision is the outcome of inbound rule evaluation for one request.
type Decision struct {
	Action string // DUNNO, "450 4.7.10 …", "550 5.7.10 …" or "PREPEND …"; never OK
	// Rule is the rule that decided a non-DUNNO action (nil otherwise).
	Rule *store.InboundRule
	// Matched lists every rule that matched, in table order.
	Matched []RuleResult
}

// Blocked reports whether the decision defers or rejects the mail.
func (d Decision) Blocked() bool {
	return strings.HasPrefix(d.Action, "450 ") || strings.HasPrefix(d.Action, "550 ")
}

// evaluate applies the inbound rules to req (DESIGN §7): among the rules
// that match and are not met, an enforced reject beats an enforced defer;
// unmet testing rules only log, or prepend a header when they name one.
func (ix *inboundIndex) evaluate(req *inboundRequest) Decision {
	d := Decision{Action: "DUNNO"}
	var deferRule, rejectRule, headerRule *compiledRule
	var deferWhy, rejectWhy, headerWhy *shortfall
	for _, i := range ix.candidates(req) {
		r := ix.rules[i]
		if !r.matches(req) {
			continue
		}
		sf := r.unmet(req)
		res := RuleResult{Rule: r.InboundRule, Met: sf == nil}
		if sf != nil {
			res.Reason = sf.need + " is required; " + sf.got
		}
		d.Matched = append(d.Matched, res)
		if sf == nil {
			continue
		}
		switch {
		case r.Testing:
			if r.Header != "" && headerRule == nil {
				headerRule, headerWhy = r, sf
			}
		case r.Action == "reject":
			if rejectRule == nil {
				rejectRule, rejectWhy = r, sf
			}
		default:
			if deferRule == nil {
				deferRule, deferWhy = r, sf
			}
		}
	}
	switch {
	case rejectRule != nil:
		d.Rule = rejectRule.InboundRule
		d.Action = "550 5.7.10 " + replyText(rejectRule, rejectWhy, req)
	case deferRule != nil:
		d.Rule = deferRule.InboundRule
		d.Action = "450 4.7.10 " + replyText(deferRule, deferWhy, req)
	case headerRule != nil:
		d.Rule = headerRule.InboundRule
		verb := "defer"
		if headerRule.Action == "reject" {
			verb = "reject"
		}
		d.Action = fmt.Sprintf("PREPEND %s: would %s (rule %s): %s is required; %s",
			headerRule.Header, verb, sanitize(headerRule.Name), headerWhy.need, headerWhy.got)
	}
	return d
}

// replyText is the SMTP reply text for an unmet rule, e.g.
// "TLS is required for mail from bank.example (rule bank-partners): the
// connection was not encrypted; ask the postmaster of bank.example to
// enable STARTTLS".
func replyText(r *compiledRule, sf *shortfall, req *inboundRequest) string {
	_, sdom := splitAddr(req.Sender)
	var subject, who string
	switch {
	case len(r.From) > 0 && sdom != "":
		subject = "mail from " + sanitize(sdom)
		who = "the postmaster of " + sanitize(sdom)
	case len(r.To) > 0:
		subject = "mail to " + sanitize(strings.ToLower(req.Recipient))
	default:
		client := verifiedName(req.ClientName)
		if client == "" {
			client = req.ClientAddress
		}
		subject = "mail from " + sanitize(client)
	}
	if who == "" {
		if sdom != "" {
			who = "the postmaster of " + sanitize(sdom)
		} else {
			who = "the sender's postmaster"
		}
	}
	return fmt.Sprintf("%s is required for %s (rule %s): %s; ask %s to %s",
		sf.need, subject, sanitize(r.Name), sf.got, who, sf.advice)
}
