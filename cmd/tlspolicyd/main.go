// Command tlspolicyd is a TLS policy daemon for Postfix and Exim: it answers
// socketmap lookups for smtp_tls_policy_maps (outbound) and policy
// delegation requests (inbound) from a policy table kept in git.
//
// This package holds flags and wiring only.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/internal/logtext"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run executes the CLI and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	return runIO(args, os.Stdin, stdout, stderr)
}

// runIO is run with standard input given (query reads keys from it).
func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	app.Reader = stdin
	ordered, err := flagsFirst(app, args)
	if err == nil {
		err = app.Run(ordered)
	}
	if err != nil {
		code := 2
		msg := "tlspolicyd: " + err.Error()
		if ec, ok := err.(cli.ExitCoder); ok {
			code, msg = ec.ExitCode(), ec.Error()
		}
		if msg != "" {
			fmt.Fprintln(stderr, msg)
		}
		if code == 2 && !strings.Contains(msg, "--help") {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", helpName(app, args))
		}
		return code
	}
	return 0
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:  "tlspolicyd",
		Usage: "enforce TLS per partner domain and address for Postfix and Exim",
		Description: `tlspolicyd answers Postfix socketmap lookups for smtp_tls_policy_maps,
transport_maps and sender_dependent_default_transport_maps (outbound TLS),
and Postfix policy delegation requests (inbound TLS), from a policy table of
YAML files kept in git. See README.md and examples/ for the Postfix settings.

Quick start:
  tlspolicyd serve --table examples/table --policyd "" --http ""
  postmap -q bank.example socketmap:inet:127.0.0.1:10041:tls_policy
  tlspolicyd query --table examples/table --explain sub.bank.example
  tlspolicyd check --table examples/table`,
		Writer:                 stdout,
		ErrWriter:              stderr,
		UseShortOptionHandling: false,
		ExitErrHandler:         func(*cli.Context, error) {}, // run() reports errors and exit codes
		OnUsageError:           usageError,
		// Without a command: the help page; an unknown one is a usage error
		// with urfave's suggestion, not "No help topic".
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return cli.ShowAppHelp(c)
			}
			msg := fmt.Sprintf("tlspolicyd: %q: unknown command", c.Args().First())
			if s := suggestCommand(c.App.Commands, c.Args().First()); s != "" {
				msg += "; did you mean " + s + "?"
			}
			return cli.Exit(msg, 2)
		},
		Commands: commands(

			serveCommand(),
			queryCommand(),
			checkCommand(),
			reportCommand(),
			tlsrptCommand(),
			probeCommand(),
			&cli.Command{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					fmt.Fprintln(c.App.Writer, "tlspolicyd", buildVersion())
					return nil
				},
			},
		),
	}
}

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

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v = strings.TrimSuffix(v+" "+s.Value[:12], " ")
			}
		}
		if v != "" {
			return v
		}
	}
	return "devel"
}

// newLogger builds the daemon's slog logger.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	// The same lines as slog.NewTextHandler, cheaper (internal/logtext).
	return slog.New(logtext.New(w, opts))
}
