package alert

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/safetext"
)

// describe fills in the texts of al from its event: a title, what it
// means, and what the postmaster should do about it.
func describe(al *Alert) {
	dom := clean(al.Domain)
	if dom == "" {
		dom = "(unknown domain)"
	}
	where := ""
	if al.Source != "" {
		where = " at " + clean(al.Source)
	}
	switch al.Kind {
	case events.InboundBlocked:
		verb, fate := "deferred", "The messages were deferred: the sending server keeps them in its queue, retries, and returns them to their senders when it gives up (usually after a few days)."
		if strings.HasPrefix(al.Action, "550") {
			verb, fate = "rejected", "The messages were rejected: their senders get a bounce."
		}
		al.Title = fmt.Sprintf("Mail from %s %s: TLS policy not met", dom, verb)
		al.Explanation = "We are unable to accept messages from the following domain because the domain's mail server did not establish a TLS connection that meets our policy. " + fate
		al.RecommendedAction = fmt.Sprintf("Contact the email administrator for %s and ask them to enable TLS (STARTTLS) on their outgoing mail servers so that they meet the requirement above. If that cannot be done in time, put the rule%s in testing mode (testing: true) meanwhile.", dom, where)
	case events.InboundWouldBlock:
		al.Title = fmt.Sprintf("Mail from %s would be refused: TLS policy not met (testing)", dom)
		al.Explanation = "Messages from the following domain were accepted, but a rule in testing mode would have refused them because the domain's mail server did not establish a TLS connection that meets the rule. Nothing was blocked."
		al.RecommendedAction = fmt.Sprintf("Contact the email administrator for %s and ask them to enable TLS (STARTTLS) on their outgoing mail servers before the rule is enforced. Keep testing: true on the rule%s until these notices stop.", dom, where)
	case events.OutboundProbeFailed:
		if al.Action == "testing" {
			al.Title = fmt.Sprintf("Enforcing TLS for %s would defer mail (testing)", dom)
			al.Explanation = "A probe of the following domain's mail servers shows that the TLS policy being tested for it cannot be met: enforcing it would defer mail. Mail still flows under the current policy."
			al.RecommendedAction = fmt.Sprintf("Contact the email administrator for %s and ask them to fix TLS on their mail servers (STARTTLS, a valid certificate). Keep testing: true on the entry%s until a probe succeeds.", dom, where)
		} else {
			al.Title = fmt.Sprintf("Mail to %s is deferred: TLS policy cannot be met", dom)
			al.Explanation = "We are unable to deliver messages to the following domain because its mail servers do not meet the TLS policy set for it. The messages stay in our queue and are retried; they are returned to their senders if the problem lasts (Postfix's maximal_queue_lifetime, 5 days by default). This is the early warning of a probe of the domain's mail servers: with maillog set, a separate alert says when mail is really deferred."
			al.RecommendedAction = fmt.Sprintf("Contact the email administrator for %s and ask them to fix TLS on their mail servers (STARTTLS, a valid certificate). If mail must flow meanwhile, weaken or remove the entry%s, knowing that mail then travels with less protection.", dom, where)
		}
	case events.OutboundDeferred:
		al.Title = fmt.Sprintf("Mail to %s is stuck: deferred by TLS policy", dom)
		al.Explanation = "Postfix's own log shows messages to the following domain deferred because its mail servers do not meet the TLS policy (or the policy could not be looked up). They stay in the queue and are retried; they are returned to their senders if the problem lasts (Postfix's maximal_queue_lifetime, 5 days by default)."
		al.RecommendedAction = fmt.Sprintf("Contact the email administrator for %s and ask them to fix TLS on their mail servers (STARTTLS, a valid certificate). If mail must flow meanwhile, weaken or remove the policy%s, knowing that mail then travels with less protection. `postqueue -p` lists the waiting messages.", dom, where)
	case events.OutboundDelivered:
		al.Title = fmt.Sprintf("Mail to %s is delivered again", dom)
		al.Explanation = "Postfix's log shows mail to the following domain delivered again after it had been deferred by TLS policy."
		al.RecommendedAction = "Nothing to do. Postfix retries the other deferred messages on its own schedule; `postqueue -f` retries them now."
	case events.BackupMXFailed:
		if al.Action == "testing" {
			al.Title = fmt.Sprintf("A backup MX of %s cannot meet the TLS policy being tested", dom)
		} else {
			al.Title = fmt.Sprintf("A backup MX of %s cannot meet the TLS policy", dom)
		}
		al.Explanation = "A probe of the following domain's mail servers shows that some of them cannot meet the TLS policy set for it, while another one can. Mail is delivered through the one that can; it will be deferred whenever that server is down or busy, and mail may take longer while the others are tried first."
		al.RecommendedAction = fmt.Sprintf("Contact the email administrator for %s and ask them to fix TLS on the mail servers named below (STARTTLS, a valid certificate), so that the backup works under the policy too. No change is needed on our side while the other server delivers.", dom)
	case events.LearnedDowngrade:
		al.Title = fmt.Sprintf("%s stopped offering STARTTLS: possible downgrade attack", dom)
		al.Explanation = "The mail servers of the following domain offered STARTTLS before, so encryption to them was learned and is required; a new probe found STARTTLS missing or failing. This is either a change at the domain or an attacker removing STARTTLS on the way (a downgrade attack). Encryption stays required, so mail to the domain may be deferred."
		al.RecommendedAction = fmt.Sprintf("Contact the email administrator for %s and ask whether their mail servers changed. If they dropped TLS on purpose and you accept that, add an explicit entry for the domain to the policy table; otherwise keep the learned policy and investigate the network path.", dom)
	case events.LearnedEvicted:
		al.Title = fmt.Sprintf("Learned encryption to %s dropped early: probe cache full", dom)
		al.Explanation = "The mail servers of the following domain offered STARTTLS before, so encryption to them was learned and is required; the probe cache reached its limit of learned policies and dropped this one, the least recently confirmed, before learn_max_age. Until a probe learns it again, encryption to the domain is no longer required: an attacker who strips STARTTLS on the way (a downgrade attack) would get the mail in clear text, unnoticed. A flood of newly learned domains can cause this."
		al.RecommendedAction = fmt.Sprintf("If encryption to %s must stay required, add an explicit outbound entry for it to the policy table (e.g. encrypt). If this happens for many domains, look for what floods the cache with newly learned domains.", dom)
	case events.SourceEvicted:
		al.Title = fmt.Sprintf("MTA-STS or DANE policy of %s dropped early: source cache full", dom)
		al.Explanation = "The following domain publishes an MTA-STS or DANE policy that the daemon enforced; the source cache reached its limit and dropped this policy, one of those expiring first, before it expired. The next lookup fetches it again; if that fetch fails or is tampered with (an attacker blocking the policy host or DNS), the policy is not enforced meanwhile. A flood of lookups of new domains can cause this."
		al.RecommendedAction = fmt.Sprintf("If TLS to %s must stay enforced, add an explicit outbound entry for it to the policy table. If this happens for many domains, look for what floods the daemon with lookups of new domains.", dom)
	case events.CertExpiring:
		al.Title = fmt.Sprintf("Certificate of a %s mail server expires soon", dom)
		al.Explanation = "A mail server of the following domain, for which our policy requires a verified certificate (verify or secure), presents a certificate that expires soon. Once it has expired, mail to the domain will be deferred."
		al.RecommendedAction = fmt.Sprintf("Contact the email administrator for %s and ask them to renew the certificate of their mail server before it expires.", dom)
	case events.CacheCorrupt:
		al.Title = "Probe cache file damaged: learned policies may be lost"
		al.Explanation = "At start the daemon found its probe cache file damaged. It kept the file aside (named below), kept every record that could still be read, and carries on. Learned encryption policies that could not be read are no longer enforced until new probes learn them again, so an attacker stripping STARTTLS to those domains would not be noticed meanwhile."
		al.RecommendedAction = "Look at the file kept aside and at what damaged it (a full disk, a failing disk, a manual edit). If encryption to some partner domains must stay required, list them as outbound entries in the policy table."
	case events.ReloadFailed:
		al.Title = "Policy table change rejected"
		al.Explanation = "A change to the policy table could not be loaded; the previous table keeps serving, so the change has no effect yet."
		al.RecommendedAction = "Fix the errors listed (file:line) and commit again; `tlspolicyd check --table PATH` shows them before the daemon loads the table."
	case events.ProberBlind:
		al.Title = "TLS prober blind: every probe fails temporarily"
		al.Explanation = "Every recent probe of the partners' mail servers failed temporarily (DNS lookups or connections to port 25 fail), so the enforced and testing entries are not being checked: a partner whose TLS breaks would go unnoticed until mail is deferred."
		al.RecommendedAction = "Check the resolver the daemon uses (probe.resolver, else /etc/resolv.conf) and that it may connect out to port 25; the status page shows the latest failure."
	case events.FleetLinkDown:
		al.Title = "Fleet link down: the shared cache cannot be reached"
		al.Explanation = "This daemon cannot reach the shared cache (Redis or Valkey) of its fleet. It keeps answering Postfix from its own state, but what it learns (learned policies, MTA-STS and DANE results, probe results) is not shared until the link is back, and what other daemons learn meanwhile does not reach it; results wait in a bounded queue."
		al.RecommendedAction = "Check the Redis/Valkey server named by shared_cache and the network path to it; the daemon reconnects on its own and resynchronises when it answers."
	case events.FleetLinkUp:
		al.Title = "Fleet link up again"
		al.Explanation = "This daemon reaches its fleet's shared cache again and has resynchronised with it."
		al.RecommendedAction = "Nothing to do."
	default:
		al.Title = fmt.Sprintf("TLS policy event %s for %s", clean(string(al.Kind)), dom)
		al.RecommendedAction = "See the daemon's log and status page."
	}
}

// policyLine names the policy an alert is about.
func policyLine(al *Alert) string {
	var s string
	switch al.Kind {
	case events.InboundBlocked, events.InboundWouldBlock:
		s = fmt.Sprintf("inbound rule %q", clean(al.Rule))
	case events.OutboundDeferred, events.OutboundDelivered:
		s = "outbound policy " + clean(al.Rule)
		if al.Rule == "" {
			s = "outbound policy (none: Postfix's default)"
		}
	case events.OutboundProbeFailed, events.BackupMXFailed, events.CertExpiring:
		s = fmt.Sprintf("outbound entry %q", clean(al.Rule))
		if al.Action == "testing" {
			s += " (testing)"
		}
	case events.LearnedDowngrade, events.LearnedEvicted:
		s = "learned encrypt (defaults.learn: enforce)"
		if al.Rule != "" {
			s = fmt.Sprintf("learned policy for %q", clean(al.Rule))
		}
	case events.SourceEvicted:
		s = "source cache (DANE/MTA-STS)"
	case events.CacheCorrupt:
		s = "probe cache"
	case events.ReloadFailed:
		s = "policy table"
	case events.ProberBlind:
		s = "the prober (probe.resolver)"
	default:
		s = clean(al.Rule)
	}
	if al.Source != "" {
		s += ", " + clean(al.Source)
	}
	return s
}

const timeLayout = "2006-01-02 15:04:05 MST"

// digestSubject is the subject of a digest mail.
func digestSubject(alerts []Alert) string {
	if len(alerts) == 1 {
		return "[tlspolicyd] " + alerts[0].Title
	}
	seen := map[string]bool{}
	var doms []string
	for _, al := range alerts {
		d := clean(al.Domain)
		if d == "" || seen[d] {
			continue
		}
		seen[d] = true
		doms = append(doms, d)
	}
	s := fmt.Sprintf("[tlspolicyd] %d TLS policy alerts", len(alerts))
	if len(doms) > 0 {
		more := ""
		if len(doms) > 3 {
			more = fmt.Sprintf(" and %d more", len(doms)-3)
			doms = doms[:3]
		}
		s += ": " + strings.Join(doms, ", ") + more
	}
	return s
}

// digestText is the plain-text body of a digest.
func digestText(alerts []Alert, host string, interval time.Duration) string {
	var b strings.Builder
	n := "an alert"
	if len(alerts) > 1 {
		n = fmt.Sprintf("%d alerts", len(alerts))
	}
	wrap(&b, "", fmt.Sprintf("tlspolicyd on %s has %s about the TLS policy of partner domains.", host, n))
	for i, al := range alerts {
		b.WriteString("\n")
		head := fmt.Sprintf("%d. ", i+1)
		if len(alerts) == 1 {
			head = ""
		}
		ind := strings.Repeat(" ", len(head))
		b.WriteString(head + al.Title + "\n")
		if al.Explanation != "" {
			b.WriteString("\n")
			wrap(&b, ind, al.Explanation)
		}
		b.WriteString("\n")
		field := func(name, value string) {
			if value = clean(value); value != "" {
				wrapField(&b, ind, name, value)
			}
		}
		field("Domain:", al.Domain)
		field("Policy:", policyLine(&al))
		field("What failed:", al.Reason)
		if al.Kind == events.InboundBlocked || al.Kind == events.InboundWouldBlock {
			field("Answer:", al.Action)
		}
		field("Client:", al.Client)
		field("Sender:", al.Sender)
		field("When:", al.Time.UTC().Format(timeLayout))
		if al.Repeats > 1 {
			field("Occurrences:", fmt.Sprintf("%d since %s", al.Repeats, al.FirstSeen.UTC().Format(timeLayout)))
		}
		b.WriteString("\n")
		wrap(&b, ind, "Recommended action: "+al.RecommendedAction)
	}
	b.WriteString("\n-- \n")
	wrap(&b, "", fmt.Sprintf("At most one alert per domain and kind is sent every %s; repeats are counted in the next one. The status page and `tlspolicyd report` list every event.", interval))
	return b.String()
}

// composeMail returns the complete message (headers and quoted-printable
// body, CRLF line ends).
func composeMail(alerts []Alert, from string, to []string, host string, interval time.Duration, now time.Time) []byte {
	var b bytes.Buffer
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	hdr := func(name, value string) { fmt.Fprintf(&b, "%s: %s\r\n", name, value) }
	hdr("From", headerSafe(from))
	hdr("To", headerSafe(strings.Join(to, ", ")))
	hdr("Subject", mime.QEncoding.Encode("utf-8", truncate(headerSafe(digestSubject(alerts)), 200)))
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Message-ID", "<"+hex.EncodeToString(id)+".tlspolicyd@"+headerSafe(host)+">")
	hdr("Auto-Submitted", "auto-generated") // RFC 3834: no auto-replies, please
	hdr("X-Auto-Response-Suppress", "All")
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	hdr("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	_, _ = qp.Write([]byte(digestText(alerts, host, interval)))
	_ = qp.Close()
	return b.Bytes()
}

// clean makes text that came from the network or the table one safe line
// (internal/safetext), so it cannot forge mail headers or lines.
func clean(s string) string { return safetext.Line(s, 0) }

func headerSafe(s string) string { return clean(s) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

const width = 72

// wrap writes text word-wrapped at width, every line prefixed by ind.
func wrap(b *strings.Builder, ind, text string) {
	wrapHanging(b, ind, ind, text)
}

// wrapField writes "name value" with the value aligned in a column and
// continued under itself.
func wrapField(b *strings.Builder, ind, name, value string) {
	const col = 14
	first := ind + name + strings.Repeat(" ", max(1, col-len(name)))
	wrapHanging(b, first, ind+strings.Repeat(" ", col), value)
}

func wrapHanging(b *strings.Builder, first, rest, text string) {
	line := first
	empty := true
	for _, w := range strings.Fields(text) {
		if !empty && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line, empty = rest, true
		}
		if !empty {
			line += " "
		}
		line += w
		empty = false
	}
	b.WriteString(line + "\n")
}
