package events

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func ev(i int) Event {
	return Event{Time: time.Date(2026, 5, 1, 0, 0, i, 0, time.UTC), Kind: InboundBlocked, Domain: "bank.example",
		Rule: "bank-partners", Source: "table/inbound.yaml:3", Reason: fmt.Sprint(i)}
}

func reasons(evs []Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Reason)
	}
	return strings.Join(s, ",")
}

func writeEvents(t *testing.T, path string, opts LogOptions, from, to int) {
	t.Helper()
	l, err := OpenLog(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < to; i++ {
		l.Append(ev(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l.Dropped() != 0 {
		t.Fatalf("dropped %d events", l.Dropped())
	}
}

// A restart loses nothing: events written before Close come back, in
// order, into the new process's ring.
func TestLogSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "events.jsonl")
	writeEvents(t, path, LogOptions{}, 0, 5)

	l, err := OpenLog(path, LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := NewRing(3)
	if err := l.Attach(r); err != nil {
		t.Fatal(err)
	}
	if got := reasons(r.Recent(0)); got != "4,3,2" {
		t.Fatalf("restored ring = %s, want 4,3,2", got)
	}
	if len(r.Totals()) != 0 {
		t.Errorf("restored events counted in Totals: %v", r.Totals())
	}
	r.Publish(ev(5))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadTail(path, DefaultLogKeep, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	if reasons(got) != "0,1,2,3,4,5" {
		t.Fatalf("log after restart = %s", reasons(got))
	}
	if got[5] != ev(5) {
		t.Errorf("event changed on its way through the log:\n got %+v\nwant %+v", got[5], ev(5))
	}
}

// After a crash the last line may be torn: it is skipped, never fatal,
// and the next event still gets a line of its own.
func TestLogTornLastLine(t *testing.T) {
	for _, tc := range []struct {
		name, tail string
	}{
		{"half a JSON object", `{"time":"2026-05-01T00:00:09Z","kind":"inbou`},
		{"binary garbage", "\x00\x00\x00\x00"},
		{"just an opening brace", "{"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.jsonl")
			writeEvents(t, path, LogOptions{}, 0, 2)
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(tc.tail)
			f.Close()

			got, err := ReadTail(path, 0, 10, nil)
			if err != nil || reasons(got) != "0,1" {
				t.Fatalf("ReadTail = %s, %v; want 0,1", reasons(got), err)
			}
			writeEvents(t, path, LogOptions{}, 2, 3)
			got, err = ReadTail(path, 0, 10, nil)
			if err != nil || reasons(got) != "0,1,2" {
				t.Fatalf("after appending: %s, %v; want 0,1,2", reasons(got), err)
			}
		})
	}
}

func TestLogRotatesBySize(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl")
	line, _ := os.ReadFile(func() string { p := filepath.Join(dir, "one"); writeEvents(t, p, LogOptions{}, 10, 11); return p }())
	opts := LogOptions{MaxSize: int64(len(line)) * 10, Keep: 2}
	writeEvents(t, path, opts, 10, 55) // two-digit reasons: every line has the same length

	for _, name := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > opts.MaxSize {
			t.Errorf("%s is %d bytes, over MaxSize %d", name, st.Size(), opts.MaxSize)
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Errorf("%s.3 exists; Keep is 2", path)
	}
	got, err := ReadTail(path, opts.Keep, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 45 events, 10 a file: the newest 5 in PATH, 10 each in PATH.1 and PATH.2.
	if len(got) != 25 || got[0].Reason != "30" || got[24].Reason != "54" {
		t.Fatalf("tail across rotated files = %s", reasons(got))
	}
	got, _ = ReadTail(path, opts.Keep, 7, nil)
	if reasons(got) != "48,49,50,51,52,53,54" {
		t.Fatalf("last 7 = %s", reasons(got))
	}
}

// The tail is read backwards in blocks: lines across block boundaries, a
// huge damaged line and blank lines must not confuse it.
func TestReadTailBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	var b bytes.Buffer
	for i := 0; i < 3000; i++ { // ~200 bytes each: several 64 KiB blocks
		e := ev(i)
		e.Reason = fmt.Sprintf("%d %s", i, strings.Repeat("x", i%300))
		fmt.Fprintf(&b, `{"time":%q,"kind":"inbound_blocked","reason":%q}`+"\n", e.Time.Format(time.RFC3339Nano), e.Reason)
		if i == 1500 {
			b.WriteString(strings.Repeat("y", maxLine+100) + "\n\n")
		}
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadTail(path, 0, 5000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3000 {
		t.Fatalf("read %d events, want 3000", len(got))
	}
	for i, e := range got {
		if !strings.HasPrefix(e.Reason, fmt.Sprint(i)+" ") || len(e.Reason) != len(fmt.Sprint(i))+1+i%300 {
			t.Fatalf("event %d has reason %.20q…", i, e.Reason)
		}
	}
}

func TestLogAppendNeverBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := OpenLog(path, LogOptions{Queue: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		l.Append(ev(i)) // returns whether or not the writer keeps up
	}
	l.Close()
	l.Append(ev(1))
	got, _ := ReadTail(path, 0, 20000, nil)
	if uint64(len(got))+l.Dropped() != 10001 {
		t.Errorf("written %d + dropped %d != 10001 appended", len(got), l.Dropped())
	}
}

func TestReadTailMissingFile(t *testing.T) {
	got, err := ReadTail(filepath.Join(t.TempDir(), "none"), 3, 10, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("ReadTail of a missing log = %v, %v; want empty, nil", got, err)
	}
}
