// Package maillogtest feeds recorded Postfix logs into an outbound.Tracker
// for tests.
package maillogtest

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/logfollow"
	"github.com/tlspolicyd/tlspolicyd/outbound"
)

// Now is the clock the recorded logs are read with: the day after they
// were recorded (2026-12-07), so their stamps without a year land there.
func Now() time.Time { return time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC) }

// Recorded returns a tracker that has read every line of the syslog file
// at path (UTC stamps).
func Recorded(t testing.TB, path string) *outbound.Tracker {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tr := outbound.New(outbound.Config{Now: Now})
	h := tr.Handler(false, time.UTC)
	for i, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		h(l, logfollow.Position{Inode: 1, Offset: int64(i + 1)})
	}
	return tr
}
