package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/alert"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/internal/dnsq"
	"github.com/tlspolicyd/tlspolicyd/outbound"
	"github.com/tlspolicyd/tlspolicyd/sources"
	"github.com/tlspolicyd/tlspolicyd/tlsrpt"
)

// checkTLSRPT reports a tlsrpt configuration that cannot work.
func checkTLSRPT(cfg config.Config) error {
	if !cfg.TLSRPT.Enabled {
		return nil
	}
	switch {
	case cfg.Maillog == "":
		return errors.New("tlsrpt.enabled needs maillog: the reports count what Postfix logged")
	case strings.TrimSpace(cfg.TLSRPT.Organization) == "":
		return errors.New("tlsrpt.organization is empty: the reports must name the organization sending them")
	case strings.TrimSpace(cfg.TLSRPT.Contact) == "":
		return errors.New("tlsrpt.contact is empty: the reports must give an address to contact")
	}
	return nil
}

// newTLSRPT builds the TLS-RPT reporter of cfg: reports go through the
// alert relay (alerts.smtp, from alerts.from) or by HTTPS POST; the policy
// applied to a domain comes from the sources (MTA-STS, DANE) when on.
func newTLSRPT(cfg config.Config, src *sources.Manager) (*tlsrpt.Reporter, error) {
	server, err := resolverServer(cfg)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: %w", err)
	}
	roots, err := httpsRoots(cfg)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: %w", err)
	}
	host, _ := alert.FQDN()
	from := cfg.Alerts.From
	if from == "" {
		from, _ = alert.DefaultFrom()
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	return &tlsrpt.Reporter{
		Meta:   tlsrpt.Meta{Organization: cfg.TLSRPT.Organization, Contact: cfg.TLSRPT.Contact, Submitter: host},
		Sender: &tlsrpt.Sender{SMTP: cfg.Alerts.SMTP, From: from, Submitter: host, HTTP: hc},
		DNS:    &dnsq.Client{Server: server, Timeout: 5 * time.Second},
		Policy: tlsrptPolicy(src),
	}, nil
}

// tlsrptPolicy returns what policy the sources applied to a domain: an
// MTA-STS policy (enforce or testing) as "sts" with its lines, DANE as
// "tlsa" with the TLSA records; anything else (the table's own entries
// included) is "no-policy-found" in RFC 8460's terms.
func tlsrptPolicy(src *sources.Manager) func(ctx context.Context, domain string) tlsrpt.PolicyInfo {
	return func(ctx context.Context, domain string) tlsrpt.PolicyInfo {
		none := tlsrpt.PolicyInfo{Type: tlsrpt.TypeNoPolicyFound}
		if src == nil {
			return none
		}
		d, _ := src.Resolve(ctx, domain)
		r := d.Record
		switch {
		case r != nil && r.MTASTS != nil && r.MTASTS.Policy != nil:
			p := r.MTASTS.Policy
			lines := []string{"version: STSv1", "mode: " + string(p.Mode)}
			for _, mx := range p.MX {
				lines = append(lines, "mx: "+mx)
			}
			lines = append(lines, "max_age: "+strconv.FormatInt(p.MaxAge, 10))
			return tlsrpt.PolicyInfo{Type: tlsrpt.TypeSTS, String: lines, MXHost: p.MX}
		case r != nil && r.DANE != nil && r.DANE.Level != "":
			info := tlsrpt.PolicyInfo{Type: tlsrpt.TypeTLSA}
			for _, h := range r.DANE.Hosts {
				info.MXHost = append(info.MXHost, h.Name)
				for _, t := range h.TLSA {
					info.String = append(info.String, t.String())
				}
			}
			return info
		}
		return none
	}
}

func tlsrptCommand() *cli.Command {
	return &cli.Command{
		Name:  "tlsrpt",
		Usage: "send (or with --dry-run print) the TLS-RPT reports of one UTC day",
		Description: `Builds the RFC 8460 aggregate reports of --day (default: yesterday, UTC)
from the outbound counts the daemon saved (outbound.json in its state
directory) for every destination domain that publishes a _smtp._tls
"v=TLSRPTv1; rua=..." record, and sends them: mailto: through alerts.smtp,
https: by POST. --dry-run prints each report and where it would go instead.
The daemon (tlsrpt.enabled) sends each day's reports itself after midnight
UTC; running this without --dry-run sends them again.`,
		Flags: append(configFlags(),
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print the reports and their destinations; send nothing"},
			&cli.StringFlag{Name: "day", Usage: "the UTC `DAY` (2006-01-02), \"today\" or \"yesterday\" (default)"},
			&cli.StringFlag{Name: "resolver", Usage: "DNS resolver `host:port` for the _smtp._tls lookups (default: probe.resolver)"},
		),
		Action: tlsrptAction,
	}
}

func tlsrptAction(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	day := c.String("day")
	switch day {
	case "", "yesterday":
		day = time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly)
	case "today":
		day = time.Now().UTC().Format(time.DateOnly)
	}
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		return cli.Exit(fmt.Sprintf("tlspolicyd tlsrpt: --day %q: want YYYY-MM-DD, today or yesterday", day), 2)
	}
	if cfg.TLSRPT.Organization == "" || cfg.TLSRPT.Contact == "" {
		return cli.Exit("tlspolicyd tlsrpt: set tlsrpt.organization and tlsrpt.contact in the configuration", 2)
	}
	state := outboundStatePath(cfg)
	if state == "" {
		return cli.Exit("tlspolicyd tlsrpt: no state directory: log.events or probe.cache must be set", 2)
	}
	tr := outbound.New(outbound.Config{})
	if err := tr.Load(state); err != nil {
		return cli.Exit("tlspolicyd tlsrpt: "+err.Error(), 1)
	}
	// The sources' cache snapshot tells which domains had an MTA-STS or
	// DANE policy; without it every report says no-policy-found.
	cache, _ := readCache(cfg)
	src, err := newSources(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), cache)
	if err != nil {
		src = nil
	}
	rep, err := newTLSRPT(cfg, src)
	if err != nil {
		return cli.Exit("tlspolicyd tlsrpt: "+err.Error(), 1)
	}
	out := c.App.Writer
	plans, failed := rep.Plan(c.Context, day, tr.Day(day))
	for d, err := range failed {
		fmt.Fprintf(c.App.ErrWriter, "tlspolicyd tlsrpt: %s: no report: %v\n", d, err)
	}
	if len(plans) == 0 {
		fmt.Fprintf(out, "No TLS-RPT report for %s: no destination domain with sessions that day publishes _smtp._tls.\n", day)
	}
	if c.Bool("dry-run") {
		for _, p := range plans {
			fmt.Fprintf(out, "# %s: %s (%d bytes gzipped) to %s\n%s\n", p.Domain, p.Report.FileName(rep.Meta.Submitter), len(p.Gzip), strings.Join(p.RUAs, ", "), p.JSON)
		}
		return nil
	}
	sent, undelivered := rep.Send(c.Context, plans)
	for _, u := range undelivered {
		fmt.Fprintf(c.App.ErrWriter, "tlspolicyd tlsrpt: %v\n", u.Err)
	}
	fmt.Fprintf(out, "TLS-RPT %s: %d reports, %d deliveries sent, %d failed.\n", day, len(plans), sent, len(undelivered))
	if len(undelivered) > 0 || len(failed) > 0 {
		return cli.Exit("", 1)
	}
	return nil
}
