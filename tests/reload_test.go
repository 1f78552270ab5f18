package tests

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// reloadWithin is how fast a table edit must reach Postfix: the daemon
// debounces fsnotify events for ~200 ms, then parses and swaps the table.
const reloadWithin = 2 * time.Second

// waitAnswer polls postmap -q key on tls_policy until it prints want
// ("" = a miss) and fails t after reloadWithin.
func waitAnswer(t *testing.T, conf string, d *harness.Daemon, key, want, after string) {
	t.Helper()
	var last string
	if !harness.WaitFor(context.Background(), reloadWithin, func() bool {
		last = answer(t, query(t, conf, d, "tls_policy", key))
		return last == want
	}) {
		t.Fatalf("%s: postmap -q %s answers %q %v later, want %q", after, key, last, reloadWithin, want)
	}
}

// brokenEdit makes an edit that leaves the table invalid and checks that
// it changes nothing: once the daemon has logged the table's rejection
// naming wantLog (file:line), within reloadWithin, key still gets want and
// the daemon is still running.
func brokenEdit(t *testing.T, conf string, d *harness.Daemon, key, want, what, wantLog string, edit func()) {
	t.Helper()
	logged := len(d.Stderr())
	edit()
	var newLog string
	if !harness.WaitFor(context.Background(), reloadWithin, func() bool {
		newLog = d.Stderr()[logged:]
		return strings.Contains(newLog, "policy table rejected") && strings.Contains(newLog, wantLog)
	}) {
		t.Fatalf("%s: the daemon logged no rejection naming %q within %v; new log:\n%s", what, wantLog, reloadWithin, newLog)
	}
	if !d.Alive() {
		t.Fatalf("%s: the daemon exited", what)
	}
	if got := answer(t, query(t, conf, d, "tls_policy", key)); got != want {
		t.Fatalf("%s: postmap -q %s answers %q, want the old answer %q", what, key, got, want)
	}
}

// TestReload edits the table while the daemon runs and watches the answer
// Postfix gets change, for a table given as a file and as a directory:
// saving in place and replacing by rename (as git checkout does) take
// effect within 2 s; a broken edit (invalid YAML, unknown level) keeps the
// old table and the daemon up.
func TestReload(t *testing.T) {
	harness.RequirePostfix(t)
	for _, layout := range []struct {
		name  string
		asDir bool
	}{{"file", false}, {"directory", true}} {
		t.Run(layout.name, func(t *testing.T) {
			t.Parallel()
			d, path := startDaemon(t, "outbound:\n  reload.example: encrypt\n", layout.asDir)
			conf := harness.PostmapConfig(t)
			const key = "reload.example"
			if got := answer(t, query(t, conf, d, "tls_policy", key)); got != "encrypt" {
				t.Fatalf("initial answer %q, want encrypt", got)
			}

			writeFile(t, path, "outbound:\n  reload.example: verify\n")
			waitAnswer(t, conf, d, key, "verify", "saved in place")

			replaceFile(t, path, "outbound:\n  reload.example: secure\n  other.example: may\n")
			waitAnswer(t, conf, d, key, "secure", "replaced by rename")

			brokenEdit(t, conf, d, key, "secure", "invalid YAML saved in place", "table.yaml:", func() {
				writeFile(t, path, "outbound:\n  reload.example: [unclosed\n")
			})
			brokenEdit(t, conf, d, key, "secure", "unknown level replaced by rename", "table.yaml:2:", func() {
				replaceFile(t, path, "outbound:\n  reload.example: bogus\n")
			})
			// A forced reload of a broken table changes nothing either.
			brokenEdit(t, conf, d, key, "secure", "SIGHUP with a broken table", "table.yaml:2:", func() {
				if err := d.Signal(syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
			})

			replaceFile(t, path, "outbound:\n  other.example: may\n")
			waitAnswer(t, conf, d, key, "", "entry removed")

			if layout.asDir {
				// A file added to the directory (git pull) joins the table.
				replaceFile(t, filepath.Join(filepath.Dir(path), "added.yaml"), "outbound:\n  added.example: encrypt\n")
				waitAnswer(t, conf, d, "added.example", "encrypt", "file added to the directory")
			}
		})
	}
}

// TestReloadReleasesDeferred: mail Postfix deferred because the table
// required TLS is delivered once the table stops requiring it and the
// queue is flushed (Postfix asks again on every attempt).
func TestReloadReleasesDeferred(t *testing.T) {
	harness.RequirePostfix(t)
	d, path, mx, pf := newOutbound(t, "outbound:\n  held.example: encrypt\n", "held.example")
	conf := harness.PostmapConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	qid := send(ctx, t, pf, "sender@origin.example", "dave@held.example")
	r, err := pf.WaitDeferred(ctx, qid, "dave@held.example", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.DelayReason, notOffered("held.example")) {
		t.Fatalf("delay_reason %q, want %q", r.DelayReason, notOffered("held.example"))
	}

	writeFile(t, path, "outbound:\n  held.example: may\n")
	waitAnswer(t, conf, d, "held.example", "may", "policy relaxed")
	if err := pf.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pf.WaitGone(ctx, qid, 20*time.Second); err != nil {
		t.Fatalf("after the flush: %v", err)
	}
	if got := mx.ReceivedFor("dave@held.example"); len(got) != 1 {
		t.Errorf("MX received %d messages for dave@held.example, want 1", len(got))
	}
}
