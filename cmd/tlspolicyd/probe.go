package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

func probeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "resolver", Usage: "DNS resolver `HOST:PORT` (default: probe.resolver of --config, else /etc/resolv.conf)"},
		&cli.IntFlag{Name: "probe-port", Aliases: []string{"port"}, DefaultText: "25", Usage: "SMTP `PORT` to probe"},
		durationFlag("probe-timeout", 0, "30s", "bound on every step (DNS, connect, banner, each command, handshake), a `DURATION`", "timeout"),
		&cli.StringFlag{Name: "helo", Usage: "EHLO `NAME` (default: this host's name)"},
		&cli.BoolFlag{Name: "allow-private", Usage: "allow loopback and private addresses (testing only)"},
	}
}

func probeCommand() *cli.Command {
	return &cli.Command{
		Name:      "probe",
		Usage:     "test a destination's STARTTLS before enforcing it",
		ArgsUsage: "TARGET...",
		Description: `Looks up the MX hosts of each TARGET (a domain, [host], [host]:port or
domain:port, as in the table), connects to every address, and checks EHLO,
STARTTLS, the TLS handshake and the certificate, then says QUIT: it never
sends MAIL or RCPT. Prints one line per MX address and whether delivery would
succeed under each Postfix level (may, encrypt, verify, secure). For a domain
it also looks up, live, its MTA-STS policy (TXT id, mode, max_age, mx
patterns, the answer the daemon gives) and its DANE TLSA records per MX host
(authenticated by the resolver's DNSSEC validation or not).

Exit status: 0 when --level would deliver to every reachable MX of every
TARGET, 1 when not, 2 on usage errors.`,
		// No --table: probe reads no table.
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: defaultConfigPath, Usage: "daemon configuration `FILE` (YAML), for its probe settings; optional"},
		}, append(probeFlags(),
			&cli.StringFlag{Name: "level", Value: "encrypt", Usage: "the `LEVEL` the exit status judges: may, encrypt, verify or secure"},
			&cli.BoolFlag{Name: "json", Usage: "print the full results as JSON"},
			&cli.BoolFlag{Name: "dane", DefaultText: "true", Usage: "look up DANE TLSA records of a domain's MX hosts; --dane=false skips it"},
			&cli.BoolFlag{Name: "mta-sts", DefaultText: "true", Usage: "look up a domain's MTA-STS policy; --mta-sts=false skips it"},
			&cli.StringFlag{Name: "https-ca", Usage: "extra CA certificate `FILE` (PEM) trusted for MTA-STS policy fetches"},
			&cli.IntFlag{Name: "mta-sts-port", DefaultText: "443", Usage: "HTTPS `PORT` of mta-sts.<domain>"},
		)...),
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return cli.Exit("tlspolicyd probe: no TARGET given (try: tlspolicyd probe partner.example)", 2)
			}
			level := c.String("level")
			if !validProbeLevel(level) {
				return cli.Exit(fmt.Sprintf("tlspolicyd probe: --level %q: want may, encrypt, verify or secure", level), 2)
			}
			for _, t := range c.Args().Slice() {
				if _, err := probe.Canonical(t); err != nil {
					return cli.Exit(fmt.Sprintf("tlspolicyd probe: %v", err), 2)
				}
			}
			cfg, err := loadConfig(c)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			p := newProber(cfg, newLogger(c.App.ErrWriter, "text", "warn"))
			results := make([]*probe.Result, c.NArg())
			errs := make(chan error, c.NArg())
			for i, t := range c.Args().Slice() {
				go func() {
					r, err := p.Probe(c.Context, t)
					results[i] = r
					errs <- err
				}()
			}
			for range c.NArg() {
				if err := <-errs; err != nil {
					return cli.Exit(fmt.Sprintf("tlspolicyd probe: %v", err), 1)
				}
			}
			ok := true
			for _, r := range results {
				ok = ok && r.Levels[level].OK
			}
			outs := make([]probeOutput, len(results))
			for i, r := range results {
				outs[i] = probeSources(c.Context, cfg, c.Args().Get(i), r)
			}
			if c.Bool("json") {
				if err := writeJSON(c.App.Writer, outs); err != nil {
					return err
				}
			} else {
				for _, o := range outs {
					printProbe(c.App.Writer, o.Result)
					printSources(c.App.Writer, o)
				}
			}
			if !ok {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

func validProbeLevel(l string) bool {
	for _, v := range probe.Levels() {
		if l == v {
			return true
		}
	}
	return false
}
