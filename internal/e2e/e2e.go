// Package e2e decides what an end-to-end test does when a part it drives
// (Postfix, swaks, Exim, Chromium, redis, root) is missing: on a developer
// machine it skips and says why; where the parts are required (CI) it fails,
// so that a green run means every end-to-end test ran. Every end-to-end test
// skips through Skipf, never through t.Skip directly.
package e2e

import (
	"fmt"
	"os"
	"testing"
)

// EnvVar selects the behaviour: "required" makes a missing part a failure,
// "optional" a skip. Unset, a missing part fails when CI=true (as CI
// systems set it) and skips otherwise. .ci/run sets it to "required".
const EnvVar = "TLSPOLICYD_E2E"

// Required reports whether a missing end-to-end part is a failure.
func Required() bool {
	switch os.Getenv(EnvVar) {
	case "required":
		return true
	case "optional":
		return false
	}
	return os.Getenv("CI") == "true"
}

// Skipf skips t with the reason given, or fails it when Required: the test
// cannot run here, and a skip would let a run look green without it.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("cannot run this end-to-end test (%s=required or CI=true: a skip is a failure): %s", EnvVar, msg)
	}
	t.Skip("skipping: " + msg)
}
