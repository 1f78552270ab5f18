package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/store"
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "lint the policy table (for a git pre-commit hook or CI)",
		Description: `Parses and validates every file of the table exactly as the daemon would and
prints each problem as file:line: message. Errors (the daemon would refuse the
table) exit 1; warnings (e.g. a review_by date that has passed) are printed
but exit 0. See examples/git-hooks/pre-commit.`,
		Flags: configFlags(),
		Action: func(c *cli.Context) error {
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
			if _, err := store.Build(t); err != nil {
				return cli.Exit(fmt.Sprintf("%s: %v", cfg.Table, err), 1)
			}
			warnings := t.Lint(time.Now())
			for _, w := range warnings {
				fmt.Fprintf(c.App.ErrWriter, "%s: warning: %s\n", w.Source, w.Msg)
			}
			fmt.Fprintf(c.App.Writer, "%s: ok: %d outbound, %d recipients, %d senders, %d inbound rules in %d file(s), %d warning(s)\n",
				cfg.Table, len(t.Outbound), len(t.Recipients), len(t.Senders), len(t.Inbound), len(t.Files), len(warnings))
			return nil
		},
	}
}
