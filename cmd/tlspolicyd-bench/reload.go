package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"
)

// reloadStep replaces the table file by rename while 32 connections look
// up keys, and checks that every answer is the old or the new one, that no
// old answer follows the first new one, and how long the switch took.
func (b *bench) reloadStep(ctx context.Context) error {
	c := slices.Max(b.o.conns)
	fmt.Fprintf(b.out, "\nreload under load: %d connections looking up keys until 1 s after the first new answer (at most %s); %s/outbound-*.yaml replaced by rename 1 s in\n",
		c, b.o.reloadDur, b.tableDir)
	type lg struct {
		r   *result
		err error
	}
	done := make(chan lg, 1)
	go func() {
		r, err := b.step(ctx, b.daemonSpec("reload", "socketmap during reload", "socketmap", b.smAddr, casesReload, c, b.o.reloadDur, "-after-new", "1s"))
		done <- lg{r, err}
	}()
	select {
	case <-time.After(time.Second):
	case x := <-done:
		return fmt.Errorf("load generator ended early: %v", x.err)
	}
	renamed := time.Now()
	for part := range (tableSpec{Outbound: b.o.entries}).outboundFiles() {
		name := outboundFileName(part)
		if err := os.Rename(filepath.Join(b.tableDir, "."+name+".new"), filepath.Join(b.tableDir, name)); err != nil {
			return err
		}
	}
	x := <-done
	if x.err != nil {
		return x.err
	}
	r := x.r
	b.printHeader()
	b.printRow(r)
	b.results = append(b.results, r)
	first := r.int("first_new_unix_ns")
	var sw time.Duration
	okSwitch := first > 0
	detail := "no new answer seen"
	if okSwitch {
		sw = time.Unix(0, first).Sub(renamed)
		okSwitch = sw < time.Second
		detail = fmt.Sprintf("%s from rename to the first new answer", sw.Round(time.Millisecond))
	}
	if took := lastReloadTook(filepath.Join(b.work, "daemon.log")); took != "" {
		detail += fmt.Sprintf(" (daemon: parse + build %s, after the %s debounce)", took, "200ms")
	}
	fmt.Fprintf(b.out, "  answers: %s old, %s new, %s wrong, %s stale (old answer to a request sent after the first new answer)\n",
		r.f["old"], r.f["new"], r.f["wrong"], r.f["stale"])
	b.printProfiles()
	b.targets["reload-time"] = target{ok: okSwitch, detail: detail}
	b.targets["reload-clean"] = target{ok: r.int("errors") == 0 && r.int("wrong") == 0 && r.int("stale") == 0 && r.int("new") > 0,
		detail: fmt.Sprintf("errors=%s wrong=%s stale=%s (old=%s new=%s)", r.f["errors"], r.f["wrong"], r.f["stale"], r.f["old"], r.f["new"])}
	return nil
}

var tookRE = regexp.MustCompile(`msg="policy table loaded".* took=(\S+)`)

// lastReloadTook returns the "took" of the daemon's last table load.
func lastReloadTook(logFile string) string {
	data, err := os.ReadFile(logFile)
	if err != nil {
		return ""
	}
	m := tookRE.FindAllSubmatch(data, -1)
	if len(m) < 2 { // the first is the start-up load
		return ""
	}
	return string(m[len(m)-1][1])
}
