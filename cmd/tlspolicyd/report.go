package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/safetext"
	"github.com/tlspolicyd/tlspolicyd/web"
)

const defaultReportServer = "http://127.0.0.1:10043"

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:  "report",
		Usage: "per partner domain: inbound mail with and without TLS, outbound verdicts, enforcement events",
		Description: `Asks a running daemon's HTTP API (/api/report) and prints, per domain:
the messages received with and without TLS and by TLS version (counted since
the daemon started), the outbound table entries with the verdict of their
last probe, and the enforcement events of the period (--since), counted from
the daemon's event log, followed by the latest of the events themselves. It
says when the period starts before the oldest event the log still holds, or
when the daemon has no event log and keeps its latest events in memory only.
--json prints the API's JSON unchanged.

--server is the daemon's listen.http address: a URL, host:port, or
unix:/path for a unix socket.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "server", Aliases: []string{"s"}, Value: defaultReportServer, Usage: "the daemon's HTTP `URL` (or host:port, unix:/path)"},
			&cli.StringFlag{Name: "since", Value: "24h", Usage: "events of the last `PERIOD` (24h, 7d) or since an RFC 3339 time"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			&cli.BoolFlag{Name: "fleet", Usage: "add the fleet's nodes and latest events, each with the node that saw it (a daemon with shared_cache)"},
			durationFlag("timeout", 10*time.Second, "", "give up on the daemon after `DURATION`"),
		},
		Action: reportAction,
	}
}

func reportAction(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit("tlspolicyd report: unexpected arguments: "+strings.Join(c.Args().Slice(), " "), 2)
	}
	if c.Bool("json") && c.Bool("fleet") {
		return cli.Exit("tlspolicyd report: --fleet prints text; for JSON, GET /api/fleet", 2)
	}
	since := c.String("since")
	if _, err := web.ParseSince(since, time.Now()); err != nil {
		return cli.Exit("tlspolicyd report: --"+err.Error(), 2)
	}
	base, client, err := httpTarget(c.String("server"))
	if err != nil {
		return cli.Exit("tlspolicyd report: --server: "+err.Error(), 2)
	}
	ctx, cancel := context.WithTimeout(c.Context, flagDuration(c, "timeout"))
	defer cancel()
	body, err := fetchReport(ctx, client, base, since)
	if err != nil {
		return cli.Exit("tlspolicyd report: "+err.Error(), 1)
	}
	if c.Bool("json") {
		_, err := c.App.Writer.Write(body)
		return err
	}
	var rep web.Report
	if err := json.Unmarshal(body, &rep); err != nil {
		return cli.Exit(fmt.Sprintf("tlspolicyd report: %s answered something that is not a report: %v", base, err), 1)
	}
	if err := printReport(c.App.Writer, &rep, since); err != nil {
		return err
	}
	if c.Bool("fleet") {
		if err := printFleet(ctx, c.App.Writer, client, base); err != nil {
			return cli.Exit("tlspolicyd report: "+err.Error(), 1)
		}
	}
	return nil
}

// httpTarget turns --server into a base URL and a client: "unix:/path"
// dials the socket, "host:port" means http://host:port.
func httpTarget(s string) (string, *http.Client, error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
		return "http://unix", &http.Client{Transport: tr}, nil
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", nil, fmt.Errorf("%q: want http://host:port, host:port or unix:/path", s)
	}
	return strings.TrimSuffix(u.String(), "/"), &http.Client{}, nil
}

func fetchReport(ctx context.Context, client *http.Client, base, since string) ([]byte, error) {
	return fetchAPI(ctx, client, base, "/api/report?since="+url.QueryEscape(since))
}

// fetchAPI GETs path from the daemon's HTTP API; an answer other than 200
// is an error carrying the API's own error text.
func fetchAPI(ctx context.Context, client *http.Client, base, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", base, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("is the daemon running with listen.http? %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s: %s: %s", base, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("%s: %s", base, resp.Status)
	}
	return body, nil
}

const reportTime = "2006-01-02 15:04 MST"

// printReport writes the human-readable report: one block of rows per
// domain, then the events.
func printReport(out io.Writer, rep *web.Report, since string) error {
	var w bytes.Buffer
	defer func() { trimWrite(out, w.Bytes()) }()
	host := rep.Host
	if host == "" {
		host = "the daemon"
	}
	fmt.Fprintf(&w, "TLS report of %s, %s\n", host, rep.Generated.UTC().Format(reportTime))
	fmt.Fprintf(&w, "Events since %s (%s); inbound mail counted since %s (daemon start).\n",
		rep.Since.UTC().Format(reportTime), since, rep.InboundSince.UTC().Format(reportTime))
	coverageNotes(&w, rep)
	if !rep.TableLoaded {
		fmt.Fprintln(&w, "WARNING: the daemon has no valid policy table: every request fails closed.")
	}
	fmt.Fprintln(&w)

	tw := tabwriter.NewWriter(&w, 0, 0, 2, ' ', 0)
	var n notes // why a probe verdict fails, below the table
	fmt.Fprintln(tw, "DOMAIN\tIN TLS\tIN PLAIN\tTLS VERSIONS\tOUTBOUND POLICY\tLAST PROBE\tEVENTS")
	for _, d := range rep.Domains {
		in := [3]string{"-", "-", ""}
		if d.Inbound != nil {
			in = [3]string{fmt.Sprint(d.Inbound.WithTLS), fmt.Sprint(d.Inbound.WithoutTLS), versionCounts(d.Inbound.Versions)}
		}
		evs := eventCounts(d.Counts)
		rows := max(1, len(d.Outbound))
		for i := range rows {
			out, probe := "-", ""
			if i < len(d.Outbound) {
				out, probe = outboundCell(d.Outbound[i]), probeCell(d.Outbound[i], &n)
			}
			if i == 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Domain, in[0], in[1], in[2], out, probe, evs)
			} else {
				fmt.Fprintf(tw, "\t\t\t\t%s\t%s\t\n", out, probe)
			}
		}
	}
	if len(rep.Domains) == 0 {
		fmt.Fprintln(tw, "(nothing yet)\t\t\t\t\t\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	n.print(&w)
	if err := printOutboundTLS(&w, rep); err != nil {
		return err
	}

	var all []events.Event
	for _, d := range rep.Domains {
		all = append(all, d.Events...)
	}
	slices.SortStableFunc(all, func(a, b events.Event) int { return b.Time.Compare(a.Time) })
	fmt.Fprintf(&w, "\nEvents (%s)", totals(rep.EventTotals))
	if len(all) == 0 {
		fmt.Fprintln(&w, ": none.")
		return nil
	}
	if n := total(rep.EventTotals); len(all) < n {
		fmt.Fprintf(&w, ", newest first: showing the latest %d of %d (at most 20 per domain, 1000 in all):\n", len(all), n)
	} else {
		fmt.Fprintln(&w, ", newest first:")
	}
	tw = tabwriter.NewWriter(&w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tEVENT\tDOMAIN\tRULE / ENTRY\tSOURCE\tREASON")
	for _, e := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(reportTime), e.Kind, dash(e.Domain), dash(e.Rule),
			dash(e.Source), oneLine(e.Reason))
	}
	return tw.Flush()
}

// trimWrite writes b without the trailing blanks tabwriter leaves after
// empty last cells.
func trimWrite(w io.Writer, b []byte) {
	lines := bytes.Split(b, []byte("\n"))
	for i, l := range lines {
		lines[i] = bytes.TrimRight(l, " ")
	}
	_, _ = w.Write(bytes.Join(lines, []byte("\n")))
}

func outboundCell(e web.ReportEntry) string {
	s := e.Policy
	if e.Testing {
		s += " [testing]"
	}
	switch {
	case e.Section != "outbound":
		s += " (" + strings.TrimSuffix(e.Section, "s") + " " + e.Key + ")"
	case web.ReportDomainOf(e.Key) != e.Key:
		s += " (key " + e.Key + ")"
	}
	return oneLine(s)
}

// probeCell is an entry's verdict from its last probe, as the monitor
// judges it; why a policy fails goes to n, printed once below the table.
func probeCell(e web.ReportEntry, n *notes) string {
	if e.Probe == nil {
		if e.Section != "outbound" {
			return ""
		}
		return "not probed"
	}
	when := " (" + e.Probe.Time.UTC().Format("01-02 15:04") + ")"
	why := cmp.Or(e.CheckReason, e.Probe.Reason, e.Probe.Status)
	switch {
	case e.CheckOK != nil && *e.CheckOK:
		return e.Check + " ok" + when
	case e.CheckOK != nil && e.Testing:
		return e.Check + " would defer" + n.ref(e.Key, why) + when
	case e.CheckOK != nil:
		return e.Check + " fails: mail deferred" + n.ref(e.Key, why) + when
	case e.Check != "":
		// The probe said nothing of the destination's TLS (temporary
		// failure, unreachable, null MX): no verdict either way.
		return "not judged: " + e.Probe.Status + n.ref(e.Key, why) + when
	}
	return "probe " + e.Probe.Status + when + ", level not judged"
}

func versionCounts(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return cmp.Compare(m[b], m[a])
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", oneLine(k), m[k]))
	}
	return strings.Join(parts, " ")
}

func eventCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// coverageNotes says what of the period the event counts may lack: the
// events before what the event log still holds, all but the ring's latest
// when there is no event log, what could not be read. (A daemon older
// than these fields says nothing about it.)
func coverageNotes(w io.Writer, rep *web.Report) {
	if rep.EventsSource == "ring" {
		fmt.Fprintf(w, "Events counted in memory (no event log, log.events): the latest %d events only.\n", rep.EventsRingCap)
	}
	if t := rep.EventsRotatedBefore; t != nil {
		fmt.Fprintf(w, "Events before %s were rotated away (log.events_keep, log.events_max_mb): not counted.\n", t.UTC().Format(reportTime))
	}
	if rep.EventsError != "" {
		fmt.Fprintf(w, "WARNING: the event log could not be read (%s): the counts lack what it holds.\n", oneLine(rep.EventsError))
	}
}

// total adds up the events of every kind.
func total(m map[events.Kind]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func totals(m map[events.Kind]int) string {
	n := total(m)
	if n == 0 {
		return "0"
	}
	conv := make(map[string]int, len(m))
	for k, v := range m {
		conv[string(k)] = v
	}
	return fmt.Sprintf("%d: %s", n, eventCounts(conv))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return oneLine(s)
}

// oneLine keeps a table cell on one line and free of control characters
// (the text may come from the network): internal/safetext.
func oneLine(s string) string { return safetext.Line(s, 0) }
