package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/store"
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "lint the policy table (for a git pre-commit hook or CI)",
		Description: `Parses and validates every file of the table exactly as the daemon would and
prints each problem as file:line: message. Errors (the daemon would refuse the
table) exit 1; warnings (e.g. a review_by date that has passed) are printed
but exit 0, or 1 with --strict. With --probe, every enforced and testing
outbound entry is probed (as the daemon's monitor does) and each that would
defer mail today, or could not be probed, is a warning: a CI gate runs
check --probe --strict; a pre-commit hook runs check (fast, no network).
See examples/git-hooks/pre-commit.`,
		Flags: append(append(configFlags(), probeFlags()...),
			&cli.BoolFlag{Name: "probe", Usage: "also probe every enforced and testing outbound entry and the domains of recipients: and senders: entries, and warn about each that would defer mail today"},
			&cli.BoolFlag{Name: "strict", Usage: "warnings fail too (exit 1): for a CI gate, with --probe"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				// Not a table path: a typed `check newtable/` must not lint
				// the configured table and report it ok.
				return cli.Exit("tlspolicyd check: unexpected arguments: "+strings.Join(c.Args().Slice(), " ")+" (the table is --table PATH)", 2)
			}
			cfg, err := loadConfig(c)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			t, err := store.LoadTable(cfg.Table)
			if err != nil {
				var list store.ErrorList
				if errors.As(err, &list) {
					for _, e := range list {
						fmt.Fprintf(c.App.ErrWriter, "%s: error: %s\n", e.Source, e.Msg)
					}
					return cli.Exit(fmt.Sprintf("%s: %d error(s); the daemon would keep its old table", cfg.Table, len(list)), 1)
				}
				return cli.Exit(fmt.Sprintf("%s: %v", cfg.Table, err), 1)
			}
			s, err := store.Build(t)
			if err != nil {
				return cli.Exit(fmt.Sprintf("%s: %v", cfg.Table, err), 1)
			}
			warnings := t.Lint(time.Now())
			if c.Bool("probe") {
				// Probe what the table enforces or tests, as the daemon's
				// monitor does, and warn where mail would be deferred.
				p := newProber(cfg, newLogger(c.App.ErrWriter, "text", "error"))
				quiet := newLogger(io.Discard, "text", "error")
				var mu sync.Mutex
				mon := &engine.Monitor{Engine: engine.New(s, nil, nil, quiet), Probe: p.Probe, Logger: quiet,
					// An entry the probe could not judge is a warning too:
					// a CI gate must not pass a misspelt domain or a dead
					// resolver as "nothing would defer".
					OnInconclusive: func(e *store.Entry, why string) {
						mu.Lock()
						defer mu.Unlock()
						warnings = append(warnings, &store.Error{Source: e.Source,
							Msg: fmt.Sprintf("could not check %s (%s): %s", e.Key, e.Policy.Text, flagWording(why))})
					}}
				for _, f := range mon.CheckAll(c.Context) {
					warnings = append(warnings, &store.Error{Source: f.Entry.Source, Msg: f.Reason})
				}
				sort.SliceStable(warnings, func(i, j int) bool {
					a, b := warnings[i].Source, warnings[j].Source
					return a.File < b.File || (a.File == b.File && a.Line < b.Line)
				})
			}
			for _, w := range warnings {
				fmt.Fprintf(c.App.ErrWriter, "%s: warning: %s\n", w.Source, w.Msg)
			}
			summary := fmt.Sprintf("%d outbound, %d recipients, %d senders, %d inbound rules in %d file(s), %d warning(s)",
				len(t.Outbound), len(t.Recipients), len(t.Senders), len(t.Inbound), len(t.Files), len(warnings))
			if c.Bool("strict") && len(warnings) > 0 {
				return cli.Exit(fmt.Sprintf("%s: %s: failed (--strict: warnings fail)", cfg.Table, summary), 1)
			}
			fmt.Fprintf(c.App.Writer, "%s: ok: %s\n", cfg.Table, summary)
			return nil
		},
	}
}

// flagWording names the command line's flag where a probe's text names the
// configuration key (the daemon's log speaks of the key).
func flagWording(s string) string {
	return strings.ReplaceAll(s, "(allow_private is off)", "(--allow-private probes it, for tests)")
}
