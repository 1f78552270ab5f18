package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// manCommand prints the tlspolicyd(8) man page, generated from the CLI's
// own help texts, so that the installed page cannot drift from --help.
// Hidden: packaging/build-deb.sh runs it; users read `man tlspolicyd`.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print the tlspolicyd(8) man page (roff)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			// Without the help command: urfave/cli's is one global value
			// that running "help" can make its own subcommand, and the
			// page generator would then recurse forever.
			app := *c.App
			app.Commands = nil
			for _, cmd := range c.App.Commands {
				if cmd.Name != "help" {
					app.Commands = append(app.Commands, cmd)
				}
			}
			page, err := app.ToManWithSection(8)
			if err != nil {
				return fmt.Errorf("man page: %w", err)
			}
			_, err = fmt.Fprint(c.App.Writer, page)
			return err
		},
	}
}
