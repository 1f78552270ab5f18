package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/srccache"
	"github.com/tlspolicyd/tlspolicyd/store"
)

func queryCommand() *cli.Command {
	return &cli.Command{
		Name:      "query",
		Usage:     "show what Postfix would get for KEYs, and why",
		ArgsUsage: "KEY...",
		Description: `Evaluates the policy table locally (--table or the table of --config), or asks
a running daemon over socketmap (--server), exactly as Postfix would. KEY is a
next-hop for tls_policy maps (bank.example, [mx.example]:587) or an address
for tls_transport / tls_sender_transport; - reads keys from standard input,
one a line (as postmap -q -). Flags may follow the keys.

With --inbound, simulates a policy delegation request instead (from flags or
a recorded request file) and prints the action the daemon would send.

For one KEY the output is the socketmap reply (OK <policy>, NOTFOUND, TEMP or
PERM); for several (or -), each line is KEY, a tab, and the reply. --explain
adds which step and which file:line decided.

DANE and MTA-STS answers come from the daemon's source cache file as it is
(sources.cache, by default sources.json next to probe.cache): nothing is
looked up; tlspolicyd probe DOMAIN looks them up live.

Exit status: 0 when every key was answered OK or NOTFOUND, 1 when a lookup
failed (TEMP/PERM, unreadable table, daemon unreachable), 2 on usage errors.`,
		Flags: append(configFlags(),
			&cli.StringFlag{Name: "map", Aliases: []string{"m"}, Value: "tls_policy", Usage: "map `NAME`: tls_policy, tls_policy_encrypt, tls_policy_verify, tls_policy_secure, tls_transport or tls_sender_transport"},
			&cli.StringFlag{Name: "server", Aliases: []string{"s"}, Usage: "ask the daemon at socketmap `ADDR` (host:port or unix:/path) instead of reading the table"},
			&cli.BoolFlag{Name: "explain", Aliases: []string{"e"}, Usage: "say which step and table entry (file:line) decided each answer"},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON array of results"},
			&cli.StringFlag{Name: "probe-cache", Usage: "the daemon's cache `FILE`, for learned policies and DANE/MTA-STS (default: probe.cache of --config)"},
			&cli.StringFlag{Name: "sources-cache", Usage: "a DANE/MTA-STS snapshot `FILE` of an earlier version, read too (default: sources.cache of --config, else sources.json next to the probe cache)"},
			&cli.BoolFlag{Name: "inbound", Aliases: []string{"i"}, Usage: "simulate a policy delegation request (check_policy_service) instead of a socketmap lookup"},
			&cli.StringFlag{Name: "sender", Usage: "with --inbound: envelope sender `ADDRESS` (\"\" or <> for the null sender)"},
			&cli.StringFlag{Name: "recipient", Usage: "with --inbound: recipient `ADDRESS` (empty = MAIL stage)"},
			&cli.StringFlag{Name: "client", Value: "203.0.113.1", Usage: "with --inbound: client `IP` address (the default, from TEST-NET-3, matches none of the example table's client rules)"},
			&cli.StringFlag{Name: "client-name", Value: "unknown", Usage: "with --inbound: verified client `NAME`"},
			&cli.StringFlag{Name: "tls", Usage: "with --inbound: the `VERSION` Postfix sends as encryption_protocol, TLSv1.3, TLSv1.2, TLSv1.1 or TLSv1 (also tls1.3 … as the table spells them; empty = no TLS)"},
			&cli.StringFlag{Name: "ccert-fingerprint", Usage: "with --inbound: client certificate SHA-256 `FINGERPRINT`"},
			&cli.StringFlag{Name: "ccert-pubkey-fingerprint", Usage: "with --inbound: client public key SHA-256 `FINGERPRINT`"},
			&cli.StringFlag{Name: "request", Usage: "with --inbound: read the request from `FILE` (name=value lines as Postfix sends them; - for stdin); flags override its attributes"},
		),
		Action: queryAction,
	}
}

// queryMaps are the map names the daemon serves (store.Resolve).
var queryMaps = []string{store.MapPolicy, store.MapPolicyEncrypt, store.MapPolicyVerify, store.MapPolicySecure,
	store.MapTransport, store.MapSenderTransport}

// queryKeys returns the keys of args, where "-" stands for the lines of
// stdin, one key a line (blank lines skipped), as with postmap -q -.
func queryKeys(args []string, stdin io.Reader) (keys []string, fromStdin bool, err error) {
	for _, a := range args {
		if a != "-" {
			keys = append(keys, a)
			continue
		}
		if fromStdin {
			continue // one standard input
		}
		fromStdin = true
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			if k := strings.TrimSpace(sc.Text()); k != "" {
				keys = append(keys, k)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, true, err
		}
	}
	return keys, fromStdin, nil
}

// writeJSON writes v indented, without HTML escaping: a policy's
// "protocols=>=TLSv1.2" stays readable.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// queryResult is one key's answer, as printed by query.
type queryResult struct {
	Key     string          `json:"key"`
	Map     string          `json:"map"`
	Status  string          `json:"status"`
	Data    string          `json:"data,omitempty"`
	Step    string          `json:"step,omitempty"`
	Entry   string          `json:"entry,omitempty"`
	Source  string          `json:"source,omitempty"`
	Why     string          `json:"why,omitempty"`
	Testing []testingResult `json:"testing,omitempty"`
}

type testingResult struct {
	Entry  string `json:"entry"`
	Policy string `json:"policy"`
	Source string `json:"source"`
}

func queryAction(c *cli.Context) error {
	if c.String("server") != "" && c.IsSet("table") {
		return cli.Exit("tlspolicyd query: --server and --table: give one (ask the running daemon, or read a table)", 2)
	}
	if c.Bool("inbound") {
		if c.String("server") != "" {
			// --server is a socketmap address; answering from the local
			// table instead would tell the operator about the wrong table.
			return cli.Exit("tlspolicyd query: --inbound evaluates the table (--table/--config) locally; --server (a socketmap address) does not apply to it", 2)
		}
		return queryInbound(c)
	}
	keys, fromStdin, err := queryKeys(c.Args().Slice(), c.App.Reader)
	if err != nil {
		return cli.Exit(fmt.Sprintf("tlspolicyd query: reading keys from standard input: %v", err), 1)
	}
	if len(keys) == 0 && !fromStdin {
		return cli.Exit("tlspolicyd query: no KEY given (try: tlspolicyd query --table TABLE bank.example)", 2)
	}
	mapName := c.String("map")
	if !slices.Contains(queryMaps, mapName) {
		return cli.Exit(fmt.Sprintf("tlspolicyd query: --map %q: unknown map; the maps are %s", mapName, strings.Join(queryMaps, ", ")), 2)
	}
	var results []queryResult
	failed := false
	if addr := c.String("server"); addr != "" {
		if c.Bool("explain") {
			return cli.Exit("tlspolicyd query: --explain needs the table (--table/--config), not --server: the daemon's reply carries no explanation", 2)
		}
		cl, err := socketmap.Dial(c.Context, addr, 5*time.Second)
		if err != nil {
			return cli.Exit(fmt.Sprintf("tlspolicyd query: %v", err), 1)
		}
		defer cl.Close()
		for _, k := range keys {
			r, err := cl.Lookup(c.Context, mapName, k)
			if err != nil {
				return cli.Exit(fmt.Sprintf("tlspolicyd query: %s: %v", k, err), 1)
			}
			if r.Status != socketmap.StatusOK && r.Status != socketmap.StatusNotFound {
				failed = true
			}
			results = append(results, queryResult{Key: k, Map: mapName, Status: r.Status.String(), Data: r.Data})
		}
	} else {
		cfg, err := loadConfig(c)
		if err != nil {
			return cli.Exit(err.Error(), 2)
		}
		s, err := store.Load(cfg.Table)
		if err != nil {
			return cli.Exit(fmt.Sprintf("tlspolicyd query: policy table %s is invalid:\n%v", cfg.Table, err), 1)
		}
		// Learned policies come from the daemon's cache file, read as it
		// is now (no probe is run here).
		var learner store.Learner
		if cache, rep := readCache(cfg); cache != nil && cache.Count(srccache.KindLearned) > 0 {
			p := srccache.NewProbes(cache, nil, srccache.ProbesOptions{LearnMaxAge: s.Table().Defaults.LearnMaxAge,
				Logger: newLogger(c.App.ErrWriter, "text", "warn")})
			p.Loaded(rep)
			learner = p
		}
		eng := engine.New(s, learner, nil, newLogger(io.Discard, "text", "error"))
		if src := offlineSources(cfg, c.App.ErrWriter); src != nil {
			eng.SetSources(src)
		}
		for _, k := range keys {
			res, ok := localQuery(c.Context, eng, mapName, k)
			failed = failed || !ok
			results = append(results, res)
		}
	}
	if c.Bool("json") {
		if err := writeJSON(c.App.Writer, results); err != nil {
			return err
		}
	} else {
		// As postmap: one key given prints its answer alone, several
		// keys (or - for standard input) print KEY, a tab, the answer.
		withKey := len(keys) > 1 || fromStdin
		for _, r := range results {
			printQueryResult(c.App.Writer, r, withKey, c.Bool("explain"))
		}
	}
	if failed {
		return cli.Exit("", 1)
	}
	return nil
}

// localQuery resolves one key exactly as the daemon would.
func localQuery(ctx context.Context, eng *engine.Engine, mapName, key string) (queryResult, bool) {
	res := queryResult{Key: key, Map: mapName}
	ans, err := eng.ResolveContext(ctx, mapName, key)
	switch {
	case errors.Is(err, store.ErrUnknownMap):
		res.Status, res.Data = "PERM", "unknown map"
		res.Why = "map names are tls_policy, tls_policy_<level>, tls_transport, tls_sender_transport"
		return res, false
	case err != nil:
		res.Status, res.Data = "TEMP", err.Error()
		return res, false
	}
	if ans.Found {
		res.Status, res.Data = "OK", ans.Data
	} else {
		res.Status = "NOTFOUND"
	}
	res.Step = string(ans.Step)
	res.Entry = ans.Key
	if ans.Source.File != "" {
		res.Source = ans.Source.String()
	}
	res.Why = ans.Why
	for _, t := range ans.Testing {
		res.Testing = append(res.Testing, testingResult{Entry: t.Key, Policy: t.Policy.Text, Source: t.Source.String()})
	}
	return res, true
}

var stepNumber = map[string]string{
	string(store.StepExact):   "step 1, exact entry",
	string(store.StepParent):  "step 2, parent-domain entry",
	string(engine.StepDANE):   "step 3, DANE (from the source cache)",
	string(engine.StepMTASTS): "step 4, MTA-STS (from the source cache)",
	string(store.StepLearned): "step 5, learned from the probe cache",
	string(store.StepDefault): "step 6, defaults.outbound",
	string(store.StepNone):    "no entry covers it",
}

func printQueryResult(w io.Writer, r queryResult, withKey, explain bool) {
	reply := r.Status
	if r.Data != "" {
		reply += " " + r.Data
	}
	if withKey {
		fmt.Fprintf(w, "%s\t", r.Key)
	}
	fmt.Fprintln(w, reply)
	if !explain {
		return
	}
	switch {
	case r.Step == "":
		if r.Why != "" {
			fmt.Fprintf(w, "  %s\n", r.Why)
		}
	case r.Step == string(store.StepNone):
		if r.Status == "OK" {
			fmt.Fprintf(w, "  map %s: no entry covers it and defaults.outbound is empty: the map's floor level\n", r.Map)
		} else if r.Map == "tls_transport" || r.Map == "tls_sender_transport" {
			fmt.Fprintf(w, "  map %s: no entry covers it: NOTFOUND, Postfix routes it as usual\n", r.Map)
		} else {
			fmt.Fprintf(w, "  map %s: no entry covers it and defaults.outbound is empty: NOTFOUND, Postfix applies smtp_tls_security_level\n", r.Map)
		}
	default:
		line := fmt.Sprintf("  map %s: %s", r.Map, stepNumber[r.Step])
		if r.Entry != "" {
			line += fmt.Sprintf(" %q", r.Entry)
		}
		if r.Source != "" {
			line += " at " + r.Source
		}
		fmt.Fprintln(w, line)
		// The step line already says what the base text says; add the
		// explanation only where it tells more (a raised floor, a probe).
		if r.Why != "" && (r.Step == string(store.StepLearned) || r.Step == string(engine.StepDANE) ||
			r.Step == string(engine.StepMTASTS) || strings.Contains(r.Why, "raised")) {
			fmt.Fprintf(w, "  %s\n", r.Why)
		}
	}
	for _, t := range r.Testing {
		fmt.Fprintf(w, "  passed over testing entry %q (%s) at %s: Postfix does not get it until testing is removed\n", t.Entry, t.Policy, t.Source)
	}
}
