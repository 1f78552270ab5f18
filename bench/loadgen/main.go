// Command loadgen drives a request/response server over loopback with N
// persistent connections, each sending one request at a time (as Postfix
// does), and prints throughput and latency. Protocols: socketmap
// (socketmap_table(5) netstrings), policy (Postfix SMTPD_POLICY_README
// policy delegation), redis (RESP GET, the reference server).
//
// It also checks every answer: with -cases each request comes with the exact
// reply it must get (or a prefix and a substring), and with a second, "next"
// answer per case it measures a table reload under load: every reply must be
// the old or the new answer, and once any connection has seen a new answer,
// no request sent later may get an old one. Standard library only, so it
// builds anywhere Go does.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// startedLine is what -announce prints when the measured run begins.
const startedLine = "loadgen: load started"

// stats is what one connection measured.
type stats struct {
	lat       []time.Duration
	wrong     int64
	old, new  int64
	oldSent   []time.Time // send times of requests answered with the old reply
	firstNew  time.Time   // receive time of the first new reply
	errSample []string
}

func main() {
	proto := flag.String("proto", "socketmap", "socketmap | policy | redis")
	addr := flag.String("addr", "127.0.0.1:10041", "server address (tcp host:port or unix:/path)")
	conns := flag.Int("c", 32, "connections")
	dur := flag.Duration("d", 5*time.Second, "duration")
	mapName := flag.String("map", "tls_policy", "socketmap name")
	keys := flag.String("keys", "", "file of keys, one a line (default: generated d%d.example)")
	nkeys := flag.Int("n", 1000, "generated keys")
	expect := flag.String("expect", "", "reply prefix every answer must have (e.g. 'OK'); mismatches count as errors")
	afterNew := flag.Duration("after-new", 0, "with -cases that have next answers: stop this long after the first new answer (-d is then the longest run)")
	announce := flag.Bool("announce", false, "print \"loadgen: load started\" on stderr when the measured run begins (after the cases are read and encoded), for tools that profile the server during the run")
	casesFile := flag.String("cases", "", "JSON-lines file of {key, req, want, prefix, contains, next}: every reply is checked against its case (overrides -keys)")
	flag.Parse()

	var cases []*testCase
	var err error
	switch {
	case *casesFile != "":
		cases, err = readCases(*casesFile)
	case *keys != "":
		cases, err = readKeys(*keys)
	default:
		for i := 0; i < *nkeys; i++ {
			cases = append(cases, &testCase{Key: fmt.Sprintf("d%d.example", i)})
		}
	}
	if err == nil && len(cases) == 0 {
		err = fmt.Errorf("no keys")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	reload := false
	for i, c := range cases {
		c.wire = encode(*proto, *mapName, c, i)
		if *expect != "" && c.Want == "" && c.Prefix == "" {
			c.Prefix = *expect
		}
		if c.Next != "" {
			reload = true
		}
	}
	network, address := "tcp", *addr
	if strings.HasPrefix(address, "unix:") {
		network, address = "unix", strings.TrimPrefix(address, "unix:")
	}

	var ops, errs atomic.Int64
	st := make([]*stats, *conns)
	if *announce {
		fmt.Fprintln(os.Stderr, startedLine)
	}
	start := time.Now()
	var deadline atomic.Int64 // UnixNano
	deadline.Store(start.Add(*dur).UnixNano())
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := 0; i < *conns; i++ {
		s := &stats{lat: make([]time.Duration, 0, 1<<14)}
		st[i] = s
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := net.Dial(network, address)
			if err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			defer c.Close()
			r := bufio.NewReaderSize(c, 4096)
			n := i * 7919
			for time.Now().UnixNano() < deadline.Load() {
				tc := cases[n%len(cases)]
				n++
				t0 := time.Now()
				var reply string
				_, err := c.Write(tc.wire)
				if err == nil {
					switch *proto {
					case "socketmap":
						reply, err = readNetstring(r)
					case "policy":
						reply, err = readPolicy(r)
					case "redis":
						reply, err = readRESP(r)
					}
				}
				t1 := time.Now()
				if err == nil {
					seen := !s.firstNew.IsZero()
					err = s.check(tc, reply, t0, t1)
					if !seen && !s.firstNew.IsZero() && *afterNew > 0 {
						// Shorten the run, never lengthen it.
						end := t1.Add(*afterNew).UnixNano()
						for d := deadline.Load(); end < d && !deadline.CompareAndSwap(d, end); d = deadline.Load() {
						}
					}
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					if len(s.errSample) < 3 {
						s.errSample = append(s.errSample, err.Error())
					}
					if err == io.EOF || strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "broken pipe") {
						return
					}
					continue
				}
				s.lat = append(s.lat, t1.Sub(t0))
				ops.Add(1)
			}
		}(i)
	}
	wg.Wait()

	var all []time.Duration
	var wrong, nold, nnew int64
	var firstNew time.Time
	var samples []string
	for _, s := range st {
		all = append(all, s.lat...)
		wrong += s.wrong
		nold += s.old
		nnew += s.new
		if !s.firstNew.IsZero() && (firstNew.IsZero() || s.firstNew.Before(firstNew)) {
			firstNew = s.firstNew
		}
		samples = append(samples, s.errSample...)
	}
	slices.Sort(all)
	pct := func(p float64) int64 {
		if len(all) == 0 {
			return -1
		}
		return all[int(float64(len(all)-1)*p)].Microseconds()
	}
	if e := firstErr.Load(); e != nil {
		fmt.Fprintln(os.Stderr, "first error:", e)
	}
	for i, e := range samples {
		if i == 5 {
			break
		}
		fmt.Fprintln(os.Stderr, "error:", e)
	}
	elapsed := time.Duration(deadline.Load() - start.UnixNano())
	line := fmt.Sprintf("proto=%s conns=%d ops=%d ops_per_s=%.0f p50_us=%d p99_us=%d p999_us=%d errors=%d wrong=%d elapsed_s=%.3f",
		*proto, *conns, ops.Load(), float64(ops.Load())/elapsed.Seconds(), pct(0.5), pct(0.99), pct(0.999), errs.Load(), wrong, elapsed.Seconds())
	if reload {
		// stale: old answers to requests sent after some connection had
		// already received a new answer, i.e. after the swap.
		var stale int64
		if !firstNew.IsZero() {
			for _, s := range st {
				for _, t := range s.oldSent {
					if t.After(firstNew) {
						stale++
					}
				}
			}
		}
		fn := int64(0)
		if !firstNew.IsZero() {
			fn = firstNew.UnixNano()
		}
		line += fmt.Sprintf(" old=%d new=%d stale=%d first_new_unix_ns=%d", nold, nnew, stale, fn)
	}
	fmt.Println(line)
}
