package srccache

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzDecodeSnapshot: whatever the cache file holds (torn, garbled, of
// any version or format), decoding never panics, and every record it
// returns is one Load may restore: a known kind, a key, its payload.
func FuzzDecodeSnapshot(f *testing.F) {
	good, _ := json.Marshal(rec(KindMTASTS, "a.test", time.Hour, 24*time.Hour))
	for _, s := range []string{
		`{"version":2,"records":[` + string(good) + `]}`,
		`{"version":1,"records":[` + string(good) + `,{"kind":`,
		`{"version":1,"saved":"2026-12-07T12:00:00Z","entries":[{"last_used":"2026-12-07T12:00:00Z","result":{"target":"a.test","time":"2026-12-07T11:00:00Z","status":"ok"}}],"learned":[{"domain":"a.test","first_learned":"2026-12-01T00:00:00Z","last_confirmed":"2026-12-07T11:00:00Z"}]}`,
		`{"version":2,"records":[{"kind":"probe","domain":"x.test","probe":{}},{"kind":"learned","domain":"y.test","learned":{}}]}`,
		`{"version":9}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, _, _, _ := decodeSnapshot(data, t0)
		for _, r := range recs {
			if r == nil {
				t.Fatal("nil record")
			}
			if err := validRecord(r); err != nil {
				t.Fatalf("invalid record returned: %v", err)
			}
		}
	})
}
