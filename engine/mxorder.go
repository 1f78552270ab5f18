package engine

import "slices"

// mxSessionLimit is Postfix's smtp_mx_session_limit default: the SMTP
// sessions (connections that got a banner) one delivery attempt makes
// before it gives up and defers the mail.
const mxSessionLimit = 2

// triedAddr is one reached MX address as Postfix would meet it: its MX
// preference, its name for texts, and why it cannot meet the policy ("":
// it can).
type triedAddr struct {
	pref  uint16
	where string
	why   string
}

// delivery is what Postfix does with the addresses of one destination.
type delivery struct {
	delivered bool
	// via names the address the mail goes through (when delivered).
	via string
	// failing lists "host[addr]: why" for every address that cannot meet
	// the policy; backupOnly says they all have a less preferred MX
	// preference than every address that can.
	failing    []string
	backupOnly bool
}

// deliver tells whether Postfix delivers to addrs (in MX preference
// order) under a policy each either meets or not. Postfix tries the
// addresses in preference order, moving to the next after a session that
// cannot meet the policy (TLS required but not offered, a failed
// handshake or certificate check), for at most mxSessionLimit sessions.
// Postfix shuffles addresses of equal preference, so the worst order is
// assumed: within a preference, the failing addresses first.
func deliver(addrs []triedAddr) delivery {
	order := slices.Clone(addrs)
	slices.SortStableFunc(order, func(a, b triedAddr) int {
		if a.pref != b.pref {
			return int(a.pref) - int(b.pref)
		}
		switch {
		case a.why != "" && b.why == "":
			return -1
		case a.why == "" && b.why != "":
			return 1
		}
		return 0
	})
	var d delivery
	for i, a := range order {
		if i == mxSessionLimit {
			break
		}
		if a.why == "" {
			d.delivered, d.via = true, a.where
			break
		}
	}
	bestOK := -1
	for _, a := range addrs {
		if a.why == "" {
			if bestOK < 0 || int(a.pref) < bestOK {
				bestOK = int(a.pref)
			}
			continue
		}
		d.failing = append(d.failing, a.where+": "+a.why)
	}
	if len(d.failing) > 0 && bestOK >= 0 {
		d.backupOnly = true
		for _, a := range addrs {
			if a.why != "" && int(a.pref) <= bestOK {
				d.backupOnly = false
			}
		}
	}
	return d
}
