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
		err = helpTopic(app, args)
	}
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
YAML files kept in git. See README.md and examples/ for the Postfix settings
(installed: /usr/share/doc/tlspolicyd/).

Quick start:
  tlspolicyd serve --table examples/table --policyd "" --http ""
  postmap -q bank.example socketmap:inet:127.0.0.1:10041:tls_policy
  tlspolicyd query --table examples/table --explain sub.bank.example
  tlspolicyd check --table examples/table`,
		Version:                buildVersion(),
		EnableBashCompletion:   true, // packaging/tlspolicyd.bash-completion asks --generate-bash-completion
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
			manCommand(),
		),
	}
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
