package duration

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	const day = 24 * time.Hour
	for s, want := range map[string]time.Duration{
		"90s": 90 * time.Second, "24h": day, "1h30m": 90 * time.Minute, "7d": 7 * day, "30d": 30 * day,
		"1d12h": day + 12*time.Hour, "0d": 0, "2d30m": 2*day + 30*time.Minute, "-1d": -day,
	} {
		if got, err := Parse(s); err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "d", "7", "1.5d", "xd", "1d-1h", "1dd", "7days", "1e3d", "100001d", "d1h"} {
		if got, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", s, got)
		}
	}
}
