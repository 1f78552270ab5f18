// Package duration parses the one duration syntax of tlspolicyd's table,
// configuration file, flags and API: Go's (time.ParseDuration: "90s",
// "24h", "1h30m") with days added ("7d", "30d", "1d12h"), a day being
// 24 hours.
package duration

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Parse parses s: a Go duration, optionally preceded by a whole number
// of days ("30d", "1d12h").
func Parse(s string) (time.Duration, error) {
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (e.g. 90s, 24h, 30d, 1d12h)", s)
		}
		return d, nil
	}
	neg := strings.HasPrefix(days, "-")
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(days, "-"), "+"), 10, 32)
	if err != nil || days == "" || strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+") {
		return 0, fmt.Errorf("%q is not a duration (e.g. 90s, 24h, 30d, 1d12h)", s)
	}
	var d time.Duration
	if rest != "" {
		if d, err = time.ParseDuration(rest); err != nil {
			return 0, fmt.Errorf("%q is not a duration (e.g. 90s, 24h, 30d, 1d12h)", s)
		}
	}
	const maxDays = 100_000 // 273 years: far below time.Duration's 292
	if n > maxDays {
		return 0, fmt.Errorf("%q is too long", s)
	}
	d += time.Duration(n) * 24 * time.Hour
	if neg {
		d = -d
	}
	return d, nil
}

// Value is a flag.Value (and urfave/cli Generic) of a duration in Parse's
// syntax.
type Value struct{ D time.Duration }

var _ flag.Value = (*Value)(nil)

// Set parses s.
func (v *Value) Set(s string) error {
	d, err := Parse(s)
	if err != nil {
		return err
	}
	v.D = d
	return nil
}

// String returns the duration as Go writes it.
func (v *Value) String() string {
	if v == nil {
		return ""
	}
	return v.D.String()
}
