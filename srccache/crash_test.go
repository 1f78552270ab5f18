package srccache

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/snapshot"
)

// Environment of the crash test's child process (see TestMain).
const (
	crashPathEnv  = "TLSPOLICYD_TEST_CRASH_CACHE"     // cache file the child rewrites
	crashStartEnv = "TLSPOLICYD_TEST_CRASH_FIRST_GEN" // its first generation
)

func TestMain(m *testing.M) {
	if path := os.Getenv(crashPathEnv); path != "" {
		first, _ := strconv.Atoi(os.Getenv(crashStartEnv))
		crashWriter(path, first) // never returns
	}
	os.Exit(m.Run())
}

// crashEpoch is the time of the crash test's results (and of its loads, so
// that none has expired).
var crashEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// generation fills c with the results of generation gen: 100 to 199
// targets, each saying which generation it belongs to, so that a file
// mixing two generations or missing a part is told apart from a whole one.
func generation(c *Probes, gen int) {
	at := crashEpoch.Add(time.Duration(gen) * time.Second)
	for i := range 100 + gen%100 {
		r := synthetic(fmt.Sprintf("t%03d.crash.test", i), at, i%2 == 0)
		r.Reason = fmt.Sprintf("generation %d", gen)
		c.Put(r)
	}
}

// crashWriter is the child process: it saves generation after generation
// to path, printing "saved N" after each Save returns, until it is killed.
func crashWriter(path string, gen int) {
	for ; ; gen++ {
		cache, err := New(Options{Path: path})
		if err != nil {
			fmt.Fprintln(os.Stderr, "new:", err)
			os.Exit(2)
		}
		generation(NewProbes(cache, nil, ProbesOptions{Logger: quiet}), gen)
		if err := cache.Save(); err != nil {
			fmt.Fprintln(os.Stderr, "save:", err)
			os.Exit(2)
		}
		fmt.Printf("saved %d\n", gen)
	}
}

// loadGeneration loads path into a fresh cache and returns the single
// generation it holds. It fails the test if the file is not a complete,
// valid generation: unparsable, records skipped, generations mixed or
// targets missing.
func loadGeneration(t *testing.T, path string) int {
	t.Helper()
	var ev evlog
	c, rep := reload(t, path, 0, ProbesOptions{Now: func() time.Time { return crashEpoch }, OnEvent: ev.add})
	if rep.Corrupt != nil || len(ev.all) > 0 {
		t.Fatalf("loading the cache after a kill: %+v, events %+v", rep.Corrupt, ev.all)
	}
	all := c.All()
	if len(all) == 0 {
		t.Fatal("cache empty after a kill")
	}
	gen, err := strconv.Atoi(strings.TrimPrefix(all[0].Reason, "generation "))
	if err != nil {
		t.Fatalf("result reason %q", all[0].Reason)
	}
	for _, r := range all {
		if r.Reason != all[0].Reason {
			t.Fatalf("torn cache: %s has %q, %s has %q", all[0].Target, all[0].Reason, r.Target, r.Reason)
		}
	}
	if want := 100 + gen%100; len(all) != want {
		t.Fatalf("generation %d has %d results, want %d", gen, len(all), want)
	}
	return gen
}

// TestProbesSurviveSIGKILL: a child process saves the cache over and over
// and is killed with SIGKILL at a random moment, 30 times. After every
// kill a fresh Load reads a complete, valid file: the last generation the
// child finished saving, or the one it was saving (if the rename happened
// before the kill), never a torn or mixed one.
func TestProbesSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns 30 processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "probes.json")
	initial := newProbes(t, Options{Path: path}, 0, ProbesOptions{})
	generation(initial, 0)
	if err := initial.c.Save(); err != nil {
		t.Fatal(err)
	}
	onDisk := 0 // the generation the file holds
	const rounds = 30
	midSave := 0
	for round := 1; round <= rounds; round++ {
		first := round * 1000
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), crashPathEnv+"="+path, crashStartEnv+"="+strconv.Itoa(first))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		// Let it save a few times, then kill it at a random moment.
		for range 1 + rand.IntN(3) {
			if !lines.Scan() {
				_ = cmd.Wait() // stderr is complete (and no longer written) after Wait
				t.Fatalf("round %d: child ended early: %s", round, stderr.String())
			}
		}
		time.Sleep(time.Duration(rand.IntN(20000)) * time.Microsecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		last := -1
		for {
			var n int
			if _, err := fmt.Sscanf(lines.Text(), "saved %d", &n); err == nil {
				last = n
			}
			if !lines.Scan() {
				break
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, not by SIGKILL: %s", round, err, stderr.String())
		}

		got := loadGeneration(t, path)
		switch got {
		case last:
		case last + 1:
			midSave++ // killed after the rename, before it printed
		default:
			t.Fatalf("round %d: file holds generation %d; the child had saved up to %d (file before: %d)", round, got, last, onDisk)
		}
		onDisk = got
	}
	// Kills during a save leave its temporary file behind; the next
	// process removes the ones older than staleTempAge at its first Save.
	temps, _ := filepath.Glob(filepath.Join(dir, snapshot.TempPrefix(path)+"*"))
	t.Logf("%d kills: %d interrupted a save before its rename, %d came after a rename the child had not reported",
		rounds, len(temps), midSave)
	old := time.Now().Add(-2 * staleTempAge)
	for _, tmp := range temps {
		if err := os.Chtimes(tmp, old, old); err != nil {
			t.Fatal(err)
		}
	}
	fresh := filepath.Join(dir, snapshot.TempPrefix(path)+"in-progress")
	if err := os.WriteFile(fresh, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := reload(t, path, 0, ProbesOptions{Now: func() time.Time { return crashEpoch }})
	if err := c.c.Save(); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, snapshot.TempPrefix(path)+"*"))
	if len(left) != 1 || left[0] != fresh {
		t.Errorf("temporary files after the first Save: %v (had %d stale), want only the fresh %s", left, len(temps), fresh)
	}
	if got := loadGeneration(t, path); got != onDisk {
		t.Errorf("after re-saving: generation %d, want %d", got, onDisk)
	}
}
