package exim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Result is the outcome of one exim run.
type Result struct {
	Stdout, Stderr string
	// Code is the exit status.
	Code int
}

// String formats r for failure messages.
func (r Result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
}

// Run runs exim with the macros defines and args, feeding it stdin. A
// non-zero exit is not an error; err is set only when exim could not run or
// ctx ended.
func (x *Instance) Run(ctx context.Context, defines map[string]string, stdin string, args ...string) (Result, error) {
	cmd := x.command(ctx, defines, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	res := Result{Stdout: out.String(), Stderr: errb.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() >= 0 && ctx.Err() == nil:
		res.Code = exit.ExitCode()
	default:
		res.Code = -1
		return res, fmt.Errorf("exim %s: %w (%s)", strings.Join(args, " "), err, res)
	}
	return res, nil
}

// ExpandError is a string expansion that Exim reported as failed.
type ExpandError struct {
	// Message is Exim's reason, after "Failed: ".
	Message string
}

func (e *ExpandError) Error() string { return "expansion failed: " + e.Message }

// Expand evaluates exprs with one exim -be run (macros of the
// configuration and defines are substituted first) and returns one result
// per expression. A failed expansion is an *ExpandError in errs (nil for the
// others); err is set when exim did not run properly. Results must not
// contain newlines: -be prints one line per expression.
func (x *Instance) Expand(ctx context.Context, defines map[string]string, exprs ...string) (results []string, errs []error, err error) {
	res, err := x.Run(ctx, defines, "", append([]string{"-be"}, exprs...)...)
	if err != nil {
		return nil, nil, err
	}
	lines := strings.Split(strings.TrimSuffix(res.Stdout, "\n"), "\n")
	if res.Code != 0 || len(lines) != len(exprs) || strings.Contains(res.Stderr, "configuration error") {
		return nil, nil, fmt.Errorf("exim -be %q: %s", exprs, res)
	}
	errs = make([]error, len(lines))
	for i, l := range lines {
		if msg, ok := strings.CutPrefix(l, "Failed: "); ok {
			errs[i] = &ExpandError{Message: msg}
			lines[i] = ""
		}
	}
	return lines, errs, nil
}

// Expand1 is Expand for one expression.
func (x *Instance) Expand1(ctx context.Context, defines map[string]string, expr string) (string, error) {
	r, errs, err := x.Expand(ctx, defines, expr)
	if err != nil {
		return "", err
	}
	return r[0], errs[0]
}

// Route runs exim -bt for addr and returns what Exim printed (the router and
// transport, or why the address cannot be routed) and the exit code: 0
// routed, 1 deferred ("cannot be resolved at this time"), 2 failed.
func (x *Instance) Route(ctx context.Context, defines map[string]string, addr string) (string, int, error) {
	res, err := x.Run(ctx, defines, "", "-bt", addr)
	if err != nil {
		return "", -1, err
	}
	if strings.Contains(res.Stderr, "configuration error") {
		return "", -1, fmt.Errorf("exim -bt %s: %s", addr, res)
	}
	return res.Stdout, res.Code, nil
}
