package srccache

import "time"

// Watch is what the monitor remembers of one monitored key between its
// checks (a KindWatch record). The record's Domain is the key:
// "outbound:<entry key>", "recipients:<level>:<domain>",
// "senders:<level>:<domain>" or "mta-sts:<domain>"; its Refresh is the
// next check, Checked the last attempt, Fetched the last probe that
// returned a result, and Error the last attempt's error (a probe that
// failed or that the prober's per-minute cap refused).
type Watch struct {
	// Probed is when the last probe that returned a result started
	// (zero: never): a lookup's kick probes again only an interval later.
	Probed time.Time `json:"probed,omitzero"`
	// Policy is the Postfix policy judged (for a testing entry or MTA-STS
	// policy, the one enforcing it would answer), Level the probe level
	// its verdict starts from (encrypt, verify or secure).
	Policy  string `json:"policy,omitempty"`
	Level   string `json:"level,omitempty"`
	Testing bool   `json:"testing,omitempty"`
	// ID is the MTA-STS policy id of an "mta-sts:" key: a new policy is
	// checked soon, not an interval later.
	ID string `json:"id,omitempty"`
	// Status is the last result's probe status (probe.Status*).
	Status string `json:"status,omitempty"`
	// Defer is why the last result says enforcing Policy defers mail (or,
	// Testing, would defer it); "" when it delivers or the result said
	// nothing of TLS (then Inconclusive says why).
	Defer        string `json:"defer,omitempty"`
	Inconclusive string `json:"inconclusive,omitempty"`
	// Findings are the reasons of the last result's findings: the
	// deferral, a backup MX that cannot meet the policy, a certificate
	// that expires soon.
	Findings []string `json:"findings,omitempty"`
}

// MTASTSWatchKey is the key of the watch record of domain's MTA-STS
// policy.
func MTASTSWatchKey(domain string) string { return "mta-sts:" + domain }
