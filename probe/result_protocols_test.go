package probe

import (
	"slices"
	"testing"
)

func TestCheckProtocols(t *testing.T) {
	tests := []struct {
		version   string
		lo, hi    uint16
		ok, known bool
	}{
		{"TLSv1", 0x0303, 0x0304, false, true}, // below the minimum: fails
		{"TLSv1.1", 0x0303, 0x0304, false, true},
		{"TLSv1.2", 0x0303, 0x0304, true, true},
		{"TLSv1.3", 0x0301, 0x0303, false, false}, // above the maximum: probably negotiates down
		{"TLSv1.3", 0x0304, 0x0304, true, true},
		{"TLSv1.3", 0, 0, false, true}, // no version enabled
		{"0x0305", 0x0303, 0x0304, false, false},
	}
	for _, tc := range tests {
		c, known := (&TLSInfo{Version: tc.version}).CheckProtocols(tc.lo, tc.hi)
		if c.OK != tc.ok || known != tc.known {
			t.Errorf("%s against %#x-%#x: %+v, known %v; want OK %v, known %v", tc.version, tc.lo, tc.hi, c, known, tc.ok, tc.known)
		}
	}
	for i, n := range []string{"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"} {
		if v, ok := TLSVersion(n); !ok || v != uint16(0x0301+i) || tlsVersionName(v) != n {
			t.Errorf("TLSVersion(%q) = %#x, %v", n, v, ok)
		}
	}
}

// TestLevelsIsACopy: a caller writing into Levels' slice cannot change the
// levels every Result is judged on.
func TestLevelsIsACopy(t *testing.T) {
	want := []string{LevelMay, LevelEncrypt, LevelVerify, LevelSecure}
	l := Levels()
	l[0] = "none"
	if got := Levels(); !slices.Equal(got, want) {
		t.Errorf("Levels() = %v after a caller's write, want %v", got, want)
	}
}
