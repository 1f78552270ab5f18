//go:build tlspolicyd_faults

package main

import (
	"log/slog"
	"os"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/internal/fault"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// withFaults wraps the engine in the fault injector, for the end-to-end
// tests only (build tag tlspolicyd_faults): $TLSPOLICYD_FAULTS holds the
// rules (fault.Parse).
func withFaults(e *engine.Engine, log *slog.Logger) (socketmap.Handler, policyd.Handler, error) {
	spec := os.Getenv("TLSPOLICYD_FAULTS")
	rules, err := fault.Parse(spec)
	if err != nil {
		return nil, nil, err
	}
	log.Warn("test build: injecting faults", "TLSPOLICYD_FAULTS", spec)
	h := &fault.Handler{Socketmap: e, Policyd: e, Fault: rules.Inject}
	return h, h, nil
}
