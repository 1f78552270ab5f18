package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestQuarantine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	now := time.Unix(1796666000, 0)
	for i, want := range []string{path + ".corrupt-1796666000", path + ".corrupt-1796666000-1"} {
		if err := os.WriteFile(path, []byte{byte('a' + i)}, 0o600); err != nil {
			t.Fatal(err)
		}
		aside, err := Quarantine(path, now)
		if err != nil || aside != want {
			t.Fatalf("Quarantine = %q, %v; want %q", aside, err, want)
		}
		if b, _ := os.ReadFile(aside); string(b) != string(rune('a'+i)) {
			t.Errorf("%s holds %q", aside, b)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", path, err)
		}
	}
	if _, err := Quarantine(filepath.Join(dir, "missing"), now); err == nil {
		t.Error("Quarantine of a missing file succeeded")
	}
}

func TestSalvageArrays(t *testing.T) {
	for _, tt := range []struct {
		name, data string
		want       map[string]int
	}{
		{"whole", `{"v":1,"a":[1,{"x":2}],"skip":{"y":[3]},"b":["s"]}`, map[string]int{"a": 2, "b": 1}},
		{"torn in an element", `{"a":[1,2,{"x":`, map[string]int{"a": 2}},
		{"garbage after the first array", `{"a":[1],"b":[1,` + "\x00", map[string]int{"a": 1, "b": 1}},
		{"not an object", `[1,2]`, map[string]int{}},
		{"garbage", "\x00\x01", map[string]int{}},
		{"a member before is damaged", `{"v":tru,"a":[1]}`, map[string]int{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := SalvageArrays([]byte(tt.data), "a", "b")
			for k, n := range tt.want {
				if len(got[k]) != n {
					t.Errorf("%s: %d elements %q, want %d", k, len(got[k]), got[k], n)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %d arrays, want %d", len(got), len(tt.want))
			}
		})
	}
	c := Corrupt{Path: "/var/lib/x.json", Aside: "/var/lib/x.json.corrupt-1", Err: errors.New("bad"), Salvaged: 3, Lost: -1, What: "probe cache"}
	if r := c.Reason(); !strings.Contains(r, "probe cache /var/lib/x.json is corrupt (bad); the original is kept as /var/lib/x.json.corrupt-1; 3 record(s) salvaged, the rest lost") {
		t.Errorf("Reason() = %q", r)
	}
}
