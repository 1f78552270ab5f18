package engine

// The inbound rules' home. A rule is parsed and validated with the table
// (store/inbound.go, store.InboundRule); here it is compiled, matched,
// checked and decided, each step in its own file:
//
//	inbound.go          the decision: Check and Evaluate call decide
//	inbound_request.go  a policy request's attributes, normalised once
//	inbound_index.go    the index that finds the rules matching a request
//	inbound_rule.go     a rule compiled at load: its texts and requirement
//	inbound_require.go  whether a request meets a rule's requirement
//	sanitize.go         request text made safe for replies and logs

import "github.com/tlspolicyd/tlspolicyd/store"

// RuleResult is one inbound rule that matched a request, and whether the
// request met its requirement.
type RuleResult struct {
	Rule   *store.InboundRule
	Met    bool
	Reason string // why it is unmet, for logs, events and --explain

	cr *compiledRule // Rule with its precomputed texts
}

// Decision is the outcome of inbound rule evaluation for one request.
type Decision struct {
	Action string // DUNNO, "450 4.7.10 …", "550 5.7.10 …" or "PREPEND …"; never OK
	// Rule is the rule that decided a non-DUNNO action (nil otherwise).
	Rule *store.InboundRule
	// Matched lists every rule that matched, in table order.
	Matched []RuleResult
}

// evaluate applies the inbound rules to req: among the rules that match and
// are not met, an enforced reject beats an enforced defer; unmet testing
// rules only log, or prepend a header when they name one. The matched rules
// are appended to matched.
func (ix *inboundIndex) evaluate(req *inboundRequest, matched []RuleResult) Decision {
	var d Decision
	d.Action, d.Rule, d.Matched = ix.decide(req, matched)
	return d
}

// decide is evaluate with the Decision's fields apart: Check passes an
// array on its stack as matched, and the compiler's escape analysis would
// move it to the heap (one allocation per request) if it shared a struct
// with the action, which goes into events.
func (ix *inboundIndex) decide(req *inboundRequest, matched []RuleResult) (action string, rule *store.InboundRule, _ []RuleResult) {
	action = "DUNNO"
	var deferRule, rejectRule, headerRule *compiledRule
	var deferWhy, rejectWhy shortfall
	var headerReason string
	var buf [8]int // matching rules; a request rarely has more
	for _, i := range ix.matching(buf[:0], req) {
		r := &ix.rules[i]
		sf, unmet := r.unmet(req)
		res := RuleResult{Rule: r.InboundRule, Met: !unmet, cr: r}
		if unmet {
			res.Reason = sf.reason
		}
		matched = append(matched, res)
		if !unmet {
			continue
		}
		switch {
		case r.testing:
			if r.hasHeader && headerRule == nil {
				headerRule, headerReason = r, res.Reason
			}
		case r.reject:
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
		rule = rejectRule.InboundRule
		action = replyText("550 5.7.10 ", rejectRule, &rejectWhy, req)
	case deferRule != nil:
		rule = deferRule.InboundRule
		action = replyText("450 4.7.10 ", deferRule, &deferWhy, req)
	case headerRule != nil:
		// "PREPEND X-TLS-Policy: would defer (rule pilot): TLS is
		// required; the connection was not encrypted"
		rule = headerRule.InboundRule
		action = headerRule.prependPrefix + headerReason
	}
	return action, rule, matched
}

// replyText is the SMTP reply for an unmet rule: code and the text, e.g.
// "TLS is required for mail from bank.example (rule bank-partners): the
// connection was not encrypted; ask the postmaster of bank.example to
// enable STARTTLS". It is built in a buffer on the stack and copied into
// one string: one allocation, where fmt.Sprintf and the concatenations
// took ten.
func replyText(code string, r *compiledRule, sf *shortfall, req *inboundRequest) string {
	sdom := req.sender.domain
	var stack [384]byte // the longest usual texts are about 250 bytes
	b := stack[:0]
	b = append(b, code...)
	b = append(b, sf.need...)
	b = append(b, " is required for "...)
	switch {
	case len(r.From) > 0 && sdom != "":
		b = append(b, "mail from "...)
		b = appendSanitized(b, sdom)
	case len(r.To) > 0:
		b = append(b, "mail to "...)
		b = appendSanitized(b, req.recipient.addr)
	default:
		b = append(b, "mail from "...)
		if req.name != "" {
			b = appendSanitized(b, req.name)
		} else {
			b = appendSanitized(b, req.ClientAddress)
		}
	}
	b = append(b, " (rule "...)
	b = append(b, r.name...)
	b = append(b, "): "...)
	b = append(b, sf.got...)
	b = append(b, "; ask "...)
	if sdom != "" {
		b = append(b, "the postmaster of "...)
		b = appendSanitized(b, sdom)
	} else {
		b = append(b, "the sender's postmaster"...)
	}
	b = append(b, " to "...)
	b = append(b, sf.advice...)
	return string(b)
}
