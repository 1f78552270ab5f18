package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

func probeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "resolver", Usage: "DNS resolver `HOST:PORT` (default: probe.resolver of --config, else /etc/resolv.conf)"},
		&cli.IntFlag{Name: "probe-port", Aliases: []string{"port"}, DefaultText: "25", Usage: "SMTP `PORT` to probe"},
		&cli.DurationFlag{Name: "probe-timeout", Aliases: []string{"timeout"}, DefaultText: "30s", Usage: "bound on every step (DNS, connect, banner, each command, handshake), a `DURATION`"},
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
succeed under each Postfix level (may, encrypt, verify, secure).

Exit status: 0 when --level would deliver to every reachable MX of every
TARGET, 1 when not, 2 on usage errors.`,
		// No --table: probe reads no table.
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: defaultConfigPath, Usage: "daemon configuration `FILE` (YAML), for its probe settings; optional"},
		}, append(probeFlags(),
			&cli.StringFlag{Name: "level", Value: "encrypt", Usage: "the `LEVEL` the exit status judges: may, encrypt, verify or secure"},
			&cli.BoolFlag{Name: "json", Usage: "print the full results as JSON"},
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
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return err
				}
			} else {
				for _, r := range results {
					printProbe(c.App.Writer, r)
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
	for _, v := range probe.Levels {
		if l == v {
			return true
		}
	}
	return false
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// printProbe prints a result as a readable table: one row per MX address,
// then the verdict per level.
func printProbe(w io.Writer, r *probe.Result) {
	fmt.Fprintf(w, "%s: %s", r.Target, r.Status)
	if r.Reason != "" {
		fmt.Fprintf(w, " (%s)", r.Reason)
	}
	fmt.Fprintf(w, ", probed in %s\n", r.Duration.Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  MX\tADDRESS\tSTARTTLS\tTLS\tCIPHER\tVERIFY\tSECURE\tEXPIRES\tERROR")
	for _, mx := range r.MX {
		name := fmt.Sprintf("%d %s", mx.Preference, mx.Host)
		if mx.Implicit {
			name = "implicit " + mx.Host
		}
		if len(mx.Addrs) == 0 {
			fmt.Fprintf(tw, "  %s\t-\t-\t-\t-\t-\t-\t-\t%s\n", name, mx.Error)
		}
		for _, a := range mx.Addrs {
			tlsv, cipher, verify, secure, expires := "-", "-", "-", "-", "-"
			if a.TLS != nil {
				tlsv, cipher = a.TLS.Version, a.TLS.Cipher
				verify, secure = checkText(a.TLS.Verify), checkText(a.TLS.Secure)
				if len(a.TLS.Chain) > 0 {
					expires = a.TLS.Chain[0].NotAfter.UTC().Format("2006-01-02")
				}
			}
			errText := a.Error
			if errText == "" && a.Warning != "" {
				errText = "warning: " + a.Warning
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, hostPort(a.Addr, a.Port),
				yesNo(a.STARTTLS), tlsv, cipher, verify, secure, expires, errText)
		}
	}
	tw.Flush()
	var parts []string
	for _, l := range probe.Levels {
		v := r.Levels[l]
		s := l + " ok"
		if !v.OK {
			s = l + " WOULD DEFER"
			if v.Reason != "" {
				s += ": " + v.Reason
			}
		}
		parts = append(parts, s)
	}
	fmt.Fprintf(w, "  verdict: %s\n\n", strings.Join(parts, "; "))
}

func checkText(c probe.Check) string {
	if c.OK {
		return "ok"
	}
	if c.Reason != "" {
		return "fail: " + c.Reason
	}
	return "fail"
}

func hostPort(addr string, port int) string {
	if strings.Contains(addr, ":") {
		return fmt.Sprintf("[%s]:%d", addr, port)
	}
	return fmt.Sprintf("%s:%d", addr, port)
}
