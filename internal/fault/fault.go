// Package fault injects failures into the daemon's request handlers, for
// tests only: an error, a panic or a hang in place of a socketmap lookup or
// a policy check, so that a test can show the servers in front of the
// engine — and Postfix behind them — failing closed. Unit tests wrap an
// engine with Handler; the tlspolicyd binary built with the build tag
// tlspolicyd_faults reads rules from $TLSPOLICYD_FAULTS (Parse). The release
// build does not import this package.
package fault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// CheckOp is the op name of a policy delegation request; a socketmap
// lookup's op is its map name.
const CheckOp = "check"

// Handler calls Fault before each request and answers with its error, or
// passes the request on to Socketmap or Policyd when it returns nil.
type Handler struct {
	Socketmap socketmap.Handler
	Policyd   policyd.Handler
	// Fault gets the op (map name or CheckOp) and the key (socketmap key,
	// or the policy request's recipient). It may panic or block.
	Fault func(ctx context.Context, op, key string) error
}

// Lookup implements socketmap.Handler.
func (h *Handler) Lookup(ctx context.Context, mapName, key string) (socketmap.Reply, error) {
	if err := h.Fault(ctx, mapName, key); err != nil {
		return socketmap.Reply{}, err
	}
	return h.Socketmap.Lookup(ctx, mapName, key)
}

// Check implements policyd.Handler.
func (h *Handler) Check(ctx context.Context, req *policyd.Request) (policyd.Action, error) {
	if err := h.Fault(ctx, CheckOp, req.Get("recipient")); err != nil {
		return "", err
	}
	return h.Policyd.Check(ctx, req)
}

// Kind is what an injected fault does.
type Kind string

const (
	// Error returns ErrInjected.
	Error Kind = "error"
	// Panic panics.
	Panic Kind = "panic"
	// Hang blocks for HangFor, ignoring the request's context, as a
	// resolver stuck in a system call would.
	Hang Kind = "hang"
)

// HangFor bounds a Hang, so a test process does not keep goroutines for
// ever; it is far beyond any request timeout.
const HangFor = 10 * time.Minute

// ErrInjected is the error of an Error fault.
var ErrInjected = errors.New("injected fault")

// Rule makes requests of one op whose key contains Match fail with Kind.
type Rule struct {
	Op, Match string
	Kind      Kind
}

// Rules is a list of rules; the first that matches a request applies.
type Rules []Rule

// Parse reads rules written "op:match=kind", separated by ";", e.g.
// "tls_policy:error.example=error;check:hang@ourcorp.example=hang".
func Parse(spec string) (Rules, error) {
	var rs Rules
	for item := range strings.SplitSeq(spec, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		opMatch, kind, ok1 := strings.Cut(item, "=")
		op, match, ok2 := strings.Cut(opMatch, ":")
		if !ok1 || !ok2 || op == "" || match == "" {
			return nil, fmt.Errorf("fault rule %q: want op:match=kind", item)
		}
		switch k := Kind(kind); k {
		case Error, Panic, Hang:
			rs = append(rs, Rule{Op: op, Match: match, Kind: k})
		default:
			return nil, fmt.Errorf("fault rule %q: kind %q is not error, panic or hang", item, kind)
		}
	}
	return rs, nil
}

// Inject is a Handler.Fault: it applies the first rule whose op is op and
// whose match is in key.
func (rs Rules) Inject(_ context.Context, op, key string) error {
	for _, r := range rs {
		if r.Op != op || !strings.Contains(key, r.Match) {
			continue
		}
		switch r.Kind {
		case Error:
			return fmt.Errorf("%w for %s %q", ErrInjected, op, key)
		case Panic:
			panic(fmt.Sprintf("injected panic for %s %q", op, key))
		case Hang:
			time.Sleep(HangFor)
			return fmt.Errorf("%w: hang for %s %q ended", ErrInjected, op, key)
		}
	}
	return nil
}
