package events

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// benchEvent is an event the size of an inbound_blocked one from the
// policy-delegation benchmark.
func benchEvent(i int) Event {
	return Event{Time: time.Date(2026, 5, 1, 0, 0, 0, i, time.UTC), Kind: InboundBlocked, Domain: "s1234.example",
		Rule: "rule-1234", Source: "table/inbound.yaml:4711", Action: "450 4.7.10 TLS is required for mail from s1234.example; ask its postmaster to enable STARTTLS",
		Reason: "no TLS", Client: "mx.s1234.example[192.0.2.10]", Sender: "alice@s1234.example"}
}

// BenchmarkLogAppend: the cost of one event written to the log (wall and
// CPU time of the whole process per event; the
// writer's marshalling and write(2) included: the timer stops after Close
// has written the last one), published by 1 and by 8 concurrent
// goroutines. Publishers wait while the queue is half full so that every
// event is written, none dropped: the figure is the cost of writing, not of
// dropping.
func BenchmarkLogAppend(b *testing.B) {
	for _, par := range []int{1, 8} {
		b.Run(map[int]string{1: "writers=1", 8: "writers=8"}[par], func(b *testing.B) {
			l, err := OpenLog(filepath.Join(b.TempDir(), "events.jsonl"), LogOptions{MaxSize: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			e := benchEvent(0)
			b.SetParallelism(par) // par × GOMAXPROCS goroutines
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					for len(l.queue) > cap(l.queue)/2 {
						time.Sleep(50 * time.Microsecond) // not a spin: cpu-ns/op counts the writer's work
					}
					l.Append(e)
				}
			})
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			if l.Dropped() != 0 || l.WriteErrors() != 0 {
				b.Fatalf("dropped %d, write errors %d", l.Dropped(), l.WriteErrors())
			}
		})
	}
}

// cpuTime returns the CPU time (user + system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScan: counting a period that covers a full default-sized event
// log (10 MiB and 3 rotated files: up to 40 MiB, 127,000 events of the
// size of benchEvent's, of which some 96,000 are left after rotation), as
// /api/report does for a long --since: ns/op is one whole scan.
func BenchmarkScan(b *testing.B) {
	path := filepath.Join(b.TempDir(), "events.jsonl")
	l, err := OpenLog(path, LogOptions{Queue: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	r := NewRing(1000)
	if err := l.Attach(r); err != nil {
		b.Fatal(err)
	}
	n := int((1+DefaultLogKeep)*DefaultLogMaxSize) / len(mustLine(b, benchEvent(0)))
	for i := range n {
		r.Publish(benchEvent(i))
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		count := 0
		if _, err := r.Scan(time.Time{}, func(Event) { count++ }); err != nil || count < n*7/10 {
			b.Fatalf("scanned %d of %d: %v", count, n, err)
		}
	}
}
