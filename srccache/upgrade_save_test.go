//go:build linux

package srccache

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

// TestUpgradeSaveFailureKeepsFile: the first Save over an old probe cache
// keeps it as PATH.v1 without ever leaving PATH missing: when the new file
// cannot be written (here over the file size limit, as on a full disk; a
// crash before the rename is the same), the next start still reads the
// old file and its learned policies.
func TestUpgradeSaveFailureKeepsFile(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	path := filepath.Join(t.TempDir(), "probes.json")
	old := probeFileV1(t, path, now, []*probe.Result{synthetic("a.example", now, true)},
		[]probe.LearnedRecord{{Domain: "a.example", FirstLearned: now.Add(-time.Hour), LastConfirmed: now}})
	p, rep := reload(t, path, 0, ProbesOptions{})
	if rep.Upgraded == "" {
		t.Fatalf("Load = %+v, want an upgrade", rep)
	}
	for i := range 4000 {
		p.Put(synthetic(fmt.Sprintf("t%04d.example", i), now, true))
	}
	const limit = 512 << 10
	var was syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &was); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: was.Max}); err != nil {
		t.Skipf("cannot limit the file size: %v", err)
	}
	err := p.c.Save()
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &was); err != nil {
		t.Fatal(err)
	}
	if err == nil {
		t.Fatal("Save over the file size limit succeeded")
	}
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, old) {
		t.Fatalf("after the failed Save the cache file is gone or changed (%v)", err)
	}
	if d, _ := reload(t, path, 0, ProbesOptions{}); func() bool { _, _, ok := d.Learned("a.example"); return !ok }() {
		t.Fatal("learned policy lost when the upgrade's first Save failed")
	}
	// The next Save succeeds and still keeps the old file as PATH.v1.
	if err := p.c.Save(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path + ".v1"); err != nil || !bytes.Equal(b, old) {
		t.Fatalf("old file not kept as PATH.v1: %v", err)
	}
}
