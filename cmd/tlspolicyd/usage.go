package main

// Command line conventions every command shares: a usage error is the
// error and a pointer to --help (exit 2), a misspelt command or flag gets
// urfave's suggestion, and flags may follow the arguments.

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// commands sets what every command shares: a usage error is one line and a
// pointer to --help (not the whole help page), and "help" is a command of
// the application only (`tlspolicyd query help` looks up the key "help").
func commands(cmds ...*cli.Command) []*cli.Command {
	for _, c := range cmds {
		c.OnUsageError = usageError
		c.HideHelpCommand = true
	}
	return cmds
}

// usageError reports a flag the command line got wrong, with urfave's
// suggestion for a misspelt flag.
func usageError(c *cli.Context, err error, _ bool) error {
	name := "tlspolicyd"
	if c.Command != nil && c.Command.Name != "" {
		name += " " + c.Command.Name
	}
	msg := fmt.Sprintf("%s: %v", name, err)
	if flag, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok && c.Command != nil {
		if s := suggestName(flagNames(c.Command.Flags), strings.TrimLeft(flag, "-")); s != "" {
			msg += "; did you mean --" + s + "?"
		}
	}
	return cli.Exit(msg+fmt.Sprintf("\nRun '%s --help' for usage.", name), 2)
}

func flagNames(flags []cli.Flag) []string {
	var names []string
	for _, f := range flags {
		names = append(names, f.Names()...)
	}
	return names
}

// suggestCommand is urfave's suggestion (Jaro-Winkler) for a misspelt
// command, as a bare name.
func suggestCommand(cmds []*cli.Command, provided string) string {
	var names []string
	for _, c := range cmds {
		names = append(names, c.Names()...)
	}
	return suggestName(names, provided)
}

// suggestName returns the name of names cli.SuggestCommand picks for
// provided, or "" when it picks none of them. Jaro-Winkler always picks
// one: a name of one letter (a flag alias) or one more than a few edits
// away from provided is not offered.
func suggestName(names []string, provided string) string {
	if cli.SuggestCommand == nil || provided == "" {
		return ""
	}
	var cmds []*cli.Command
	for _, n := range names {
		if len(n) > 1 {
			cmds = append(cmds, &cli.Command{Name: n})
		}
	}
	got := cli.SuggestCommand(cmds, provided)
	for _, n := range names {
		if len(n) > 1 && got == fmt.Sprintf(cli.SuggestDidYouMeanTemplate, n) && editDistance(n, provided) <= max(2, len(n)/3) {
			return n
		}
	}
	return ""
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// flagsFirst moves the flags given after a command's arguments before
// them (`query -t TABLE bank.example --explain`), as the Go flag package
// urfave/cli parses with stops at the first argument. "--" ends the flags;
// "-" alone is an argument (standard input).
func flagsFirst(app *cli.App, args []string) ([]string, error) {
	if len(args) < 2 {
		return args, nil
	}
	var cmd *cli.Command
	i := 1
	for ; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "-") {
			cmd = app.Command(args[i])
			break
		}
	}
	if cmd == nil {
		return args, nil
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		if df, ok := f.(cli.DocGenerationFlag); ok && df.TakesValue() {
			for _, n := range f.Names() {
				takesValue[n] = true
			}
		}
	}
	out := append([]string{}, args[:i+1]...)
	var rest []string
	for j := i + 1; j < len(args); j++ {
		a := args[j]
		switch {
		case a == "--":
			rest = append(rest, args[j+1:]...)
			j = len(args)
		case a == "-" || !strings.HasPrefix(a, "-"):
			rest = append(rest, a)
		default:
			out = append(out, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] {
				if j+1 == len(args) {
					return nil, cli.Exit(fmt.Sprintf("tlspolicyd %s: flag needs an argument: %s", cmd.Name, a), 2)
				}
				j++
				out = append(out, args[j])
			}
		}
	}
	if len(rest) > 0 {
		out = append(out, "--")
	}
	return append(out, rest...), nil
}

// helpName is "tlspolicyd" or "tlspolicyd COMMAND", as the user typed it.
func helpName(app *cli.App, args []string) string {
	for _, a := range args[min(1, len(args)):] {
		if c := app.Command(a); c != nil && !strings.HasPrefix(a, "-") {
			return "tlspolicyd " + c.Name
		}
	}
	return "tlspolicyd"
}

// helpTopic refuses `help NAME` for a NAME that is no command as a usage
// error with a suggestion (urfave says "No help topic" and exits 3).
func helpTopic(app *cli.App, args []string) error {
	if len(args) < 3 || (args[1] != "help" && args[1] != "h") || strings.HasPrefix(args[2], "-") || app.Command(args[2]) != nil {
		return nil
	}
	msg := fmt.Sprintf("tlspolicyd help: %q: unknown command", args[2])
	if s := suggestCommand(app.Commands, args[2]); s != "" {
		msg += "; did you mean " + s + "?"
	}
	return cli.Exit(msg, 2)
}
