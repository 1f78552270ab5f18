package engine

import (
	"fmt"
	"strings"

	"github.com/tlspolicyd/tlspolicyd/store"
)

// watch is one thing the monitor probes and judges: an outbound entry, or
// the domain of recipients: or senders: entries at one floor level.
type watch struct {
	// key is the monitor's own key (its watch record's): "outbound:"
	// and the entry's key, "recipients:<level>:<domain>" /
	// "senders:<level>:<domain>", or "mta-sts:<domain>".
	key string
	// id is the MTA-STS policy id of an "mta-sts:" key.
	id string
	// e is what Judge judges: the outbound entry itself, or for address
	// entries one built for their domain, whose policy is the domain's
	// tls_policy_<level> answer (what the tlspolicyd-<level>: transport
	// applies) and whose Source is the first address entry's.
	e *store.Entry
	// subj words the findings: the entry's key, or the addresses.
	subj subject
	// rule is the events' Rule.
	rule string
}

// subject words a finding: "mail to <noun>" or, for senders, "mail from
// <sender> to <domain>".
type subject struct {
	noun string // what "enforcing POLICY for NOUN would defer mail" names
	mail string // what "MAIL is deferred" names
}

func outboundWatch(e *store.Entry) watch {
	return watch{key: outboundKey(e.Key), e: e, subj: subject{noun: e.Key, mail: "mail to " + e.Key}, rule: e.Key}
}

// addressWatches groups the recipients: and senders: entries the monitor
// checks by (section, domain, floor level): an address's domain, or a
// domain entry itself (".domain" entries cover subdomains nobody can name,
// and are not probed, like .parent outbound entries). A recipients: entry
// defers mail to its addresses when the domain's MX cannot meet the floor;
// a senders: entry's floor applies to all the sender's mail, and its own
// domain is the one destination known in advance.
func addressWatches(s *store.Store) []watch {
	var out []watch
	t := s.Table()
	for _, sec := range []struct {
		name    string
		entries []*store.Entry
	}{{"recipients", t.Recipients}, {"senders", t.Senders}} {
		byKey := map[string]int{}
		addrs := map[string][]string{}
		for _, e := range sec.entries {
			if CheckLevel(e.Policy) == "" || strings.HasPrefix(e.Key, ".") {
				continue
			}
			domain := e.Key
			if i := strings.LastIndexByte(e.Key, '@'); i >= 0 {
				domain = e.Key[i+1:]
			}
			if domain == "" || strings.HasPrefix(domain, ".") {
				continue
			}
			level := e.Policy.Level.String()
			key := sec.name + ":" + level + ":" + domain
			addrs[key] = append(addrs[key], e.Key)
			if _, ok := byKey[key]; ok {
				if !e.Testing { // enforced wins over testing
					out[byKey[key]].e.Testing = false
				}
				continue
			}
			pol := e.Policy
			if a, err := s.Resolve("tls_policy_"+level, domain, nil); err == nil && a.Found {
				if p, err := store.ParsePolicy(a.Data); err == nil {
					pol = p
				}
			}
			byKey[key] = len(out)
			out = append(out, watch{key: key, e: &store.Entry{Key: domain, Policy: pol, Testing: e.Testing, Source: e.Source}})
		}
		for key, i := range byKey {
			w := &out[i]
			list := addrs[key]
			names := strings.Join(list[:min(len(list), 3)], ", ")
			if len(list) > 3 {
				names += fmt.Sprintf(" and %d more", len(list)-3)
			}
			w.rule = sec.name + ": " + names
			if sec.name == "senders" {
				w.subj = subject{noun: "mail from " + names + " to " + w.e.Key, mail: "mail from " + names + " to " + w.e.Key}
			} else {
				w.subj = subject{noun: names, mail: "mail to " + names}
			}
		}
	}
	return out
}
