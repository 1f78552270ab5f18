// Command loadgen drives a request/response server over loopback with N
// persistent connections, each sending one request at a time (as Postfix
// does), and prints throughput and latency. Protocols: socketmap
// (socketmap_table(5) netstrings), policy (Postfix SMTPD_POLICY_README
// policy delegation), redis (RESP GET, the reference server).
//
// It is the team's shared load generator (../shared/tools/loadgen) made part
// of this module and extended to check every answer: with -cases each
// request comes with the exact reply it must get (or a prefix and a
// substring), and with a second, "next" answer per case it measures a table
// reload under load: every reply must be the old or the new answer, and once
// any connection has seen a new answer, no request sent later may get an
// old one. Standard library only, so it builds anywhere Go does.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// startedLine is what -announce prints when the measured run begins.
const startedLine = "loadgen: load started"

// testCase is one line of a -cases file (JSON lines).
type testCase struct {
	// Key is the socketmap key or redis key; for policy requests without
	// Req it is the sender domain filled into a built-in request.
	Key string `json:"key"`
	// Req is a complete policy delegation request (name=value lines,
	// without the final empty line).
	Req string `json:"req,omitempty"`
	// Want is the exact reply: the socketmap payload ("OK encrypt",
	// "NOTFOUND "), the redis value ("(nil)" for a missing key), or the
	// policy reply without the final newlines ("action=DUNNO").
	Want string `json:"want,omitempty"`
	// Prefix and Contains check the reply when Want is empty.
	Prefix   string `json:"prefix,omitempty"`
	Contains string `json:"contains,omitempty"`
	// Next is the exact reply after a reload (socketmap and redis): the
	// reply may then be Want or Next, never Want again once Next was seen.
	Next string `json:"next,omitempty"`

	wire []byte // the request as sent
}

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

// check compares reply with what tc expects; t0 and t1 are the send and
// receive times, recorded for the reload check.
func (s *stats) check(tc *testCase, reply string, t0, t1 time.Time) error {
	switch {
	case tc.Next != "" && reply == tc.Next:
		if s.firstNew.IsZero() {
			s.firstNew = t1
		}
		s.new++
		return nil
	case tc.Next != "" && reply == tc.Want:
		if !s.firstNew.IsZero() {
			s.wrong++
			return fmt.Errorf("old reply %q for %q after this connection saw the new table", reply, tc.Key)
		}
		s.oldSent = append(s.oldSent, t0)
		s.old++
		return nil
	case tc.Want != "":
		if reply != tc.Want {
			s.wrong++
			if tc.Next != "" {
				return fmt.Errorf("reply %q for %q, want %q (old) or %q (new)", reply, tc.Key, tc.Want, tc.Next)
			}
			return fmt.Errorf("reply %q for %q, want %q", reply, tc.Key, tc.Want)
		}
	}
	if tc.Prefix != "" && !strings.HasPrefix(reply, tc.Prefix) {
		s.wrong++
		return fmt.Errorf("unexpected reply %q for %q, want prefix %q", reply, tc.Key, tc.Prefix)
	}
	if tc.Contains != "" && !strings.Contains(reply, tc.Contains) {
		s.wrong++
		return fmt.Errorf("unexpected reply %q for %q, want it to contain %q", reply, tc.Key, tc.Contains)
	}
	return nil
}

// encode builds the request bytes for one case once, so the generator
// spends its CPU on the sockets rather than on formatting.
func encode(proto, mapName string, c *testCase, n int) []byte {
	var b bytes.Buffer
	switch proto {
	case "socketmap":
		q := mapName + " " + c.Key
		fmt.Fprintf(&b, "%d:%s,", len(q), q)
	case "policy":
		if c.Req != "" {
			b.WriteString(strings.TrimRight(c.Req, "\n"))
			b.WriteString("\n\n")
		} else {
			k := c.Key
			fmt.Fprintf(&b, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.%d\nclient_name=mx.%s\nreverse_client_name=mx.%s\nhelo_name=mx.%s\nsender=alice@%s\nrecipient=bob@ourcorp.example\nrecipient_count=0\nqueue_id=\ninstance=%x.1\nsize=1234\nencryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\n\n", n%250, k, k, k, k, n)
		}
	case "redis":
		fmt.Fprintf(&b, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(c.Key), c.Key)
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown -proto %q\n", proto)
		os.Exit(2)
	}
	return b.Bytes()
}

func readKeys(name string) ([]*testCase, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var cs []*testCase
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			cs = append(cs, &testCase{Key: l})
		}
	}
	return cs, nil
}

func readCases(name string) ([]*testCase, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var cs []*testCase
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		c := new(testCase)
		if err := json.Unmarshal(sc.Bytes(), c); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		cs = append(cs, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return cs, nil
}

func readNetstring(r *bufio.Reader) (string, error) {
	ls, err := r.ReadSlice(':')
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(string(ls[:len(ls)-1]))
	if err != nil || n < 0 || n > 100000 {
		return "", fmt.Errorf("bad netstring length %q", ls)
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	if buf[n] != ',' {
		return "", fmt.Errorf("netstring without comma")
	}
	return string(buf[:n]), nil
}

// readPolicy reads a policy reply and returns it without the final
// newlines ("action=DUNNO").
func readPolicy(r *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		l, err := r.ReadSlice('\n')
		if err != nil {
			return "", err
		}
		if len(l) == 1 {
			if sb.Len() == 0 {
				return "", fmt.Errorf("empty policy reply")
			}
			return strings.TrimSuffix(sb.String(), "\n"), nil
		}
		sb.Write(l)
	}
}

// readRESP reads a RESP reply: a bulk string's value, "(nil)" for a
// missing key, or the line of any other reply.
func readRESP(r *bufio.Reader) (string, error) {
	l, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(l, "$") {
		n, err := strconv.Atoi(strings.TrimSpace(l[1:]))
		if err != nil {
			return "", fmt.Errorf("bad RESP length %q", l)
		}
		if n < 0 {
			return "(nil)", nil
		}
		buf := make([]byte, n+2)
		_, err = io.ReadFull(r, buf)
		return string(buf[:n]), err
	}
	return strings.TrimRight(l, "\r\n"), nil
}
