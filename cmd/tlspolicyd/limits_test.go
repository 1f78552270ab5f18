package main

import "testing"

// The HTTP cap leaves the lookup listeners' connections and the reserve
// their descriptors, and is never more than httpMaxConns.
func TestHTTPConnLimit(t *testing.T) {
	for _, tc := range []struct {
		nofile      uint64
		lookupConns int
		want        int
		ok          bool
	}{
		{1 << 20, 2000, httpMaxConns, true},                    // systemd's default hard limit
		{4096, 2000, httpMaxConns, true},                       // room to spare
		{2000 + fdReserve + 50, 2000, 50, true},                // what is left
		{1024, 2000, 8, false},                                 // Debian's soft default cannot hold 2 × 1000
		{600, 100, min(600-100-fdReserve, httpMaxConns), true}, // the end-to-end test's daemon
	} {
		n, ok := httpConnLimit(tc.nofile, tc.lookupConns)
		if n != tc.want || ok != tc.ok {
			t.Errorf("httpConnLimit(%d, %d) = %d, %v; want %d, %v", tc.nofile, tc.lookupConns, n, ok, tc.want, tc.ok)
		}
	}
}
