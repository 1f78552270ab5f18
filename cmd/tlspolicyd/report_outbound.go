package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/tlspolicyd/tlspolicyd/web"
)

// printOutboundTLS prints the outbound TLS table read from Postfix's log,
// when the daemon follows it.
func printOutboundTLS(w io.Writer, rep *web.Report) error {
	if rep.Maillog == "" {
		return nil
	}
	fmt.Fprintf(w, "\nOutbound TLS from Postfix's log (%s), whole UTC days from %s:\n", rep.Maillog, rep.Since.UTC().Format("2006-01-02"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tMESSAGES\tSENT\tTLS\tVERIFIED/TRUSTED/UNTRUSTED/ANON\tTLS VERSIONS\tDEFERRED\tSTUCK NOW")
	n := 0
	for _, d := range rep.Domains {
		o := d.OutboundTLS
		if o == nil {
			continue
		}
		n++
		var defs []string
		for r, c := range o.Deferrals {
			defs = append(defs, fmt.Sprintf("%s %d", r, c))
		}
		slices.Sort(defs)
		deferred := fmt.Sprint(o.Deferred)
		if len(defs) > 0 {
			deferred += " (" + strings.Join(defs, ", ") + ")"
		}
		stuck := "-"
		if o.Stuck > 0 && o.StuckSince != nil {
			stuck = fmt.Sprintf("%d since %s: %s", o.Stuck, o.StuckSince.UTC().Format(reportTime), oneLine(o.StuckReason))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d/%d/%d/%d\t%s\t%s\t%s\n", d.Domain, o.Messages, o.Sent, o.TLS,
			o.Verified, o.Trusted, o.Untrusted, o.Anonymous, dash(versionCounts(o.Versions)), deferred, stuck)
	}
	if n == 0 {
		fmt.Fprintln(tw, "(no delivery logged yet)\t\t\t\t\t\t\t")
	}
	return tw.Flush()
}
