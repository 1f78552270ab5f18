package store

import (
	"strings"
	"testing"
)

// TestLongInputClipped: a long policy line, key or attribute is quoted in
// its error by its first maxQuoted bytes, not echoed whole. 256 KiB is far
// over any limit or buffer size of the parse; 5 MB took 20 s under -race.
func TestLongInputClipped(t *testing.T) {
	long := strings.Repeat("x", 256<<10)
	longKey := strings.Repeat("x", 1000) // YAML's limit for a plain key is 1024
	for name, table := range map[string]string{
		"policy":    "outbound:\n  a.example: " + long + "\n",
		"attribute": "outbound:\n  a.example: encrypt " + long + "\n",
		"value":     "outbound:\n  a.example: encrypt ciphers=" + long + "\n",
		"key":       "outbound:\n  " + longKey + ": encrypt\n",
		"inbound":   "inbound:\n  - name: r\n    from: " + long + "\n    require: tls\n",
		"field":     "defaults:\n  " + longKey + ": x\n",
	} {
		_, err := ParseFile("t.yaml", strings.NewReader(table))
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		for _, msg := range errLines(t, err) {
			if len(msg) > 400 || !strings.Contains(msg, "xxx…") {
				t.Errorf("%s: error of %d bytes %.200q…, want the input cut to %d bytes and …", name, len(msg), msg, maxQuoted)
			}
		}
	}
}

func TestClipArgs(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	fixed := strings.Repeat("f", maxPlain)
	got := clipArgs("%s %q %d %v %%", []any{fixed, long, 3, long})
	if got[0] != fixed || got[1] != clip(long, maxQuoted) || got[2] != 3 || got[3] != clip(long, maxQuoted) {
		t.Errorf("clipArgs = %q", got)
	}
	if c := clip(long, maxQuoted); len(c) != maxQuoted+len("…") || !strings.HasSuffix(c, "é…") {
		t.Errorf("clip cut inside a rune: %q", c)
	}
}
