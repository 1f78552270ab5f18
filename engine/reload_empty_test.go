package engine

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestReloadRefusesEmptyTable: an empty file or a bare "outbound:" used
// to replace the table serving (a truncated table swapped in). It is now
// refused with an error (OnReload, hence an event) unless it says
// defaults.allow_empty: true; an empty table at start-up loads.
func TestReloadRefusesEmptyTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.yaml")
	writeFile(t, path, "outbound:\n  bank.example: encrypt\n")
	e := New(nil, nil, nil, nil)
	var reported []error
	rl := &Reloader{Path: path, Engine: e, OnReload: func(err error) { reported = append(reported, err) }}
	if err := rl.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, empty := range []string{"", "outbound:\n", "# all gone\ndefaults:\n  learn: report\n"} {
		writeFile(t, path, empty)
		err := rl.Reload()
		if err == nil || !strings.Contains(err.Error(), path+": the new table is empty") {
			t.Errorf("%q: Reload() = %v, want the empty table refused", empty, err)
		}
		if got := lookup(t, e, "bank.example"); got != "OK encrypt" {
			t.Errorf("%q: bank.example answers %q, want the old table's OK encrypt", empty, got)
		}
		if n := len(reported); n == 0 || reported[n-1] == nil {
			t.Errorf("%q: OnReload got %v, want the error", empty, reported)
		}
	}
	writeFile(t, path, "defaults:\n  allow_empty: true\n")
	if err := rl.Reload(); err != nil {
		t.Fatalf("allow_empty: %v", err)
	}
	if got := lookup(t, e, "bank.example"); got != "NOTFOUND" {
		t.Errorf("allow_empty: bank.example answers %q, want NOTFOUND", got)
	}
	// Empty to empty, and an empty table at start-up, load.
	writeFile(t, path, "")
	if err := rl.Reload(); err != nil {
		t.Errorf("empty after empty: %v", err)
	}
	fresh := &Reloader{Path: path, Engine: New(nil, nil, nil, nil)}
	if err := fresh.Reload(); err != nil {
		t.Errorf("empty at start-up: %v", err)
	}
}
