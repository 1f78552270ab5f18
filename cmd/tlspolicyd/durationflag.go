package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/internal/duration"
)

// durationFlag is a flag taking a duration in the syntax of the table and
// the configuration file: Go's ("90s", "24h") and days ("7d", "1d12h").
func durationFlag(name string, value time.Duration, defaultText, usage string, aliases ...string) cli.Flag {
	return &cli.GenericFlag{Name: name, Aliases: aliases, Value: &duration.Value{D: value}, DefaultText: defaultText, Usage: usage}
}

// flagDuration returns the value of a durationFlag.
func flagDuration(c *cli.Context, name string) time.Duration {
	if v, ok := c.Generic(name).(*duration.Value); ok {
		return v.D
	}
	return 0
}
