package probe

import (
	"log/slog"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
)

// The fixtures (test CA, in-process DNS zone, fake MX farm) are in
// internal/probetest; what is here ties them to a Prober.

// loopback returns a fresh DNS zone and a fake MX farm with its own CA.
func loopback(t testing.TB) (*probetest.Zone, *probetest.Farm) {
	t.Helper()
	return probetest.NewZone(t), probetest.NewFarm(t, probetest.NewCA(t))
}

// testProber returns a prober asking z, connecting to f's port, trusting
// only f's CA and allowed to reach loopback addresses; mod, if set,
// changes that configuration first.
func testProber(t testing.TB, z *probetest.Zone, f *probetest.Farm, mod func(*Config)) *Prober {
	t.Helper()
	cfg := Config{
		Resolver:     z.Addr,
		Port:         f.Port,
		Timeout:      3 * time.Second,
		HELO:         "probe.tlspolicyd.test",
		AllowPrivate: true,
		Roots:        f.CA.Pool,
		Logger:       slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	return New(cfg)
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
