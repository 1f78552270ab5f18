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
			page, err := c.App.ToManWithSection(8)
			if err != nil {
				return fmt.Errorf("man page: %w", err)
			}
			_, err = fmt.Fprint(c.App.Writer, page)
			return err
		},
	}
}
