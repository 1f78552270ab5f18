package main

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

// notes numbers the full texts printed once below a probe's table, each
// with the hosts it concerns; the cells refer to them as [n].
type notes struct {
	texts []string
	where [][]string
}

// ref returns " [n]" for the text why at where, numbering it on first use.
func (n *notes) ref(where, why string) string {
	for i, t := range n.texts {
		if t == why {
			if !slices.Contains(n.where[i], where) {
				n.where[i] = append(n.where[i], where)
			}
			return fmt.Sprintf(" [%d]", i+1)
		}
	}
	n.texts = append(n.texts, why)
	n.where = append(n.where, []string{where})
	return fmt.Sprintf(" [%d]", len(n.texts))
}

func (n *notes) print(w io.Writer) {
	for i, t := range n.texts {
		fmt.Fprintf(w, "  [%d] %s: %s\n", i+1, strings.Join(n.where[i], ", "), oneLine(t))
	}
}

// errorClassText is the short cell for a failed session or lookup.
var errorClassText = map[string]string{
	probe.ClassPrivate:       "refused: not public",
	probe.ClassNXDomain:      "no such host",
	probe.ClassNoAddress:     "no address",
	probe.ClassDNSTemp:       "DNS failed (temporary)",
	probe.ClassConnect:       "connect failed",
	probe.ClassTimeout:       "timeout",
	probe.ClassBannerTemp:    "4xx greeting",
	probe.ClassBannerRefused: "5xx greeting",
	probe.ClassEHLOTemp:      "4xx to EHLO",
	probe.ClassProtocol:      "protocol error",
	probe.ClassSTARTTLS:      "STARTTLS refused",
	probe.ClassHandshake:     "handshake failed",
	probe.ClassAfterTLS:      "failed after TLS",
}

func shortError(class string) string {
	if s := errorClassText[class]; s != "" {
		return s
	}
	return "failed"
}

// fullError is an address's error as the note under the table says it:
// a refused private address names the flag that allows it.
func fullError(a *probe.AddrResult) string {
	if a.ErrorClass == probe.ClassPrivate {
		return "not probed: a loopback, private or otherwise non-public address (--allow-private probes it, for tests)"
	}
	return a.Error
}

// printProbe prints a result for a postmaster's terminal: one row per MX
// address with short cells, the verdict per level, and every full error
// text once, below, numbered.
func printProbe(w io.Writer, r *probe.Result) {
	var b bytes.Buffer
	defer func() { trimWrite(w, b.Bytes()) }()
	fmt.Fprintf(&b, "%s: %s, probed in %s\n", r.Target, r.Status, r.Duration.Round(time.Millisecond))
	if verdict, ok := targetVerdict(r); ok {
		fmt.Fprintf(&b, "  %s\n\n", verdict)
		return
	}
	var n notes
	// failed[level] lists the notes that say why the level fails.
	failed := map[string][]string{}
	fail := func(level, ref string) {
		for _, f := range failed[level] {
			if f == ref {
				return
			}
		}
		failed[level] = append(failed[level], ref)
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  MX\tADDRESS\tSTARTTLS\tTLS\tVERIFY\tSECURE\tEXPIRES\tERROR")
	for _, mx := range r.MX {
		name := fmt.Sprintf("%d %s", mx.Preference, mx.Host)
		if mx.Implicit {
			name = "implicit " + mx.Host
		}
		if len(mx.Addrs) == 0 {
			fmt.Fprintf(tw, "  %s\t-\t-\t-\t-\t-\t-\t%s%s\n", name, shortError(mx.ErrorClass), n.ref(mx.Host, mx.Error))
			continue
		}
		// One row per MX: its addresses share a row when everything but
		// the address is the same (IPv4 and IPv6 of one server, mostly).
		var rows [][7]string
		for i := range mx.Addrs {
			a := &mx.Addrs[i]
			where := a.Where(mx.Host)
			starttls, tlsv, verify, secure, expires, errCell := "-", "-", "-", "-", "-", ""
			switch {
			case !a.Reached:
				errCell = shortError(a.ErrorClass) + n.ref(where, fullError(a))
			case !a.STARTTLS:
				starttls, errCell = "no", "no STARTTLS"
				ref := n.ref(where, "no STARTTLS offered")
				for _, l := range []string{probe.LevelEncrypt, probe.LevelVerify, probe.LevelSecure} {
					fail(l, ref)
				}
			case a.ErrorClass != "" || a.TLS == nil:
				starttls = "yes"
				ref := n.ref(where, cmp.Or(a.Error, "no TLS session"))
				errCell = shortError(a.ErrorClass) + ref
				for _, l := range []string{probe.LevelEncrypt, probe.LevelVerify, probe.LevelSecure} {
					fail(l, ref)
				}
			default:
				starttls, tlsv = "yes", a.TLS.Version
				verify, secure = "ok", "ok"
				if !a.TLS.Verify.OK {
					ref := n.ref(where, a.TLS.Verify.Reason)
					verify = "fail" + ref
					fail(probe.LevelVerify, ref)
				}
				if !a.TLS.Secure.OK {
					ref := n.ref(where, a.TLS.Secure.Reason)
					secure = "fail" + ref
					fail(probe.LevelSecure, ref)
				}
				if len(a.TLS.Chain) > 0 {
					expires = a.TLS.Chain[0].NotAfter.UTC().Format("2006-01-02")
				}
			}
			if errCell == "" && a.Warning != "" {
				errCell = "warning" + n.ref(where, "warning: "+a.Warning)
			}
			rows = append(rows, [7]string{hostPort(a.Addr, a.Port), starttls, tlsv, verify, secure, expires, cmp.Or(errCell, "-")})
		}
		same := true
		for _, r := range rows[1:] {
			same = same && [6]string(r[1:]) == [6]string(rows[0][1:])
		}
		if same && len(rows) > 1 {
			rows[0][0] += fmt.Sprintf(" (+%d)", len(rows)-1)
			rows = rows[:1]
		}
		for i, r := range rows {
			if i > 0 {
				name = "" // the MX is named on its first row
			}
			fmt.Fprintf(tw, "  %s\t%s\n", name, strings.Join(r[:], "\t"))
		}
		if len(mx.Addrs) > 0 && mx.Error != "" {
			n.ref(mx.Host, mx.Error)
		}
	}
	tw.Flush()
	var parts []string
	if r.Reachable() == 0 {
		parts = append(parts, "not judged: no MX address was reached")
	}
	for _, l := range probe.Levels() {
		if r.Reachable() == 0 {
			break
		}
		v := r.Levels[l]
		switch {
		case v.OK:
			parts = append(parts, l+" ok")
		case len(failed[l]) > 0:
			parts = append(parts, l+" WOULD DEFER"+strings.Join(failed[l], ""))
		default: // a failure the rows do not show (a policy attribute)
			parts = append(parts, l+" WOULD DEFER"+n.ref(r.Target, v.Reason))
		}
	}
	fmt.Fprintf(&b, "  verdict: %s\n", strings.Join(parts, "; "))
	n.print(&b)
	fmt.Fprintln(&b)
}

// targetVerdict is the verdict of a probe that reached no MX address (no
// table then), worded as what Postfix does with the mail.
func targetVerdict(r *probe.Result) (string, bool) {
	switch {
	case r.Status == probe.StatusNoMail:
		return "verdict: the domain accepts no mail (null MX): Postfix bounces mail to it, whatever the level (" + oneLine(r.Reason) + ")", true
	case r.ErrorClass == probe.ClassNXDomain:
		return "verdict: no such domain (NXDOMAIN): Postfix bounces mail to it (Host or domain name not found), whatever the level", true
	case r.Status == probe.StatusTemporary && len(r.MX) == 0:
		return "verdict: not judged: temporary failure (" + oneLine(r.Reason) + "): Postfix would defer and retry; probe again later", true
	case len(r.MX) == 0:
		return "verdict: not judged: " + oneLine(r.Reason), true
	}
	return "", false
}

func hostPort(addr string, port int) string {
	if strings.Contains(addr, ":") {
		return fmt.Sprintf("[%s]:%d", addr, port)
	}
	return fmt.Sprintf("%s:%d", addr, port)
}
