package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRequired runs this test binary again with each setting of the
// environment and checks that a missing part skips or fails as documented.
func TestRequired(t *testing.T) {
	if os.Getenv("E2E_CHILD") == "1" {
		Skipf(t, "part %s missing", "X")
		return
	}
	tests := []struct {
		env  []string
		fail bool
	}{
		{env: nil, fail: false},
		{env: []string{EnvVar + "=required"}, fail: true},
		{env: []string{EnvVar + "=optional"}, fail: false},
		{env: []string{"CI=true"}, fail: true},
		{env: []string{"CI=true", EnvVar + "=optional"}, fail: false},
		{env: []string{"CI=false"}, fail: false},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.env, ","), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestRequired$", "-test.v")
			env := []string{"E2E_CHILD=1"}
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, EnvVar+"=") && !strings.HasPrefix(kv, "CI=") {
					env = append(env, kv)
				}
			}
			cmd.Env = append(env, tc.env...)
			out, err := cmd.CombinedOutput()
			failed := err != nil
			if failed != tc.fail {
				t.Fatalf("failed = %v, want %v:\n%s", failed, tc.fail, out)
			}
			want := "--- SKIP"
			if tc.fail {
				want = "--- FAIL"
			}
			if !strings.Contains(string(out), want) || !strings.Contains(string(out), "part X missing") {
				t.Errorf("output lacks %q and the reason:\n%s", want, out)
			}
		})
	}
}
