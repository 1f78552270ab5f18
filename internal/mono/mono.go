// Package mono reads the monotonic clock alone, as a duration since the
// process started using it: one clock reading where time.Now takes two
// (wall and monotonic). Hot paths (a request's arrival, its Handler's
// return, deadlines) use it; see bench/README.md for what it saved.
package mono

import "time"

// base anchors Now: every reading is a duration since base.
var base = time.Now()

// Now returns the time since base, reading only the monotonic clock.
func Now() time.Duration { return time.Since(base) }

// Time returns the time.Time of a reading of Now, e.g. for a deadline.
func Time(d time.Duration) time.Time { return base.Add(d) }
