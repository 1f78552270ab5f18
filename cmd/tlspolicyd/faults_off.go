//go:build !tlspolicyd_faults

package main

import (
	"log/slog"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// withFaults returns the engine as both servers' Handler. The release build
// has no fault injection; the end-to-end tests build with the tag
// tlspolicyd_faults (faults_on.go).
func withFaults(e *engine.Engine, _ *slog.Logger) (socketmap.Handler, policyd.Handler, error) {
	return e, e, nil
}
