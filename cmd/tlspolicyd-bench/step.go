package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// result is one load step's loadgen line and what the server spent on it.
type result struct {
	id       string // as in -profile-step: socketmap-32, reload, …
	name     string
	proto    string
	conns    int
	f        map[string]string
	ratio    float64 // to redis GET at the same connection count; 0 = none
	dur      time.Duration
	daemon   bool    // the server was the daemon (not redis)
	cpu      float64 // the server's CPU seconds during the step; -1 unknown
	genCPU   float64 // loadgen's CPU seconds (user + system, its whole run); -1 unknown
	rss      int64   // the server's VmRSS after the step; 0 unknown
	profiled bool    // a CPU profile was taken during the step
}

func (r *result) int(k string) int64 {
	n, _ := strconv.ParseInt(r.f[k], 10, 64)
	return n
}

func (r *result) rate() float64 {
	v, _ := strconv.ParseFloat(r.f["ops_per_s"], 64)
	return v
}

// cpuPerOp is the server's CPU microseconds per answered request, or -1.
func (r *result) cpuPerOp() float64 {
	if r.cpu < 0 || r.int("ops") <= 0 {
		return -1
	}
	return r.cpu * 1e6 / float64(r.int("ops"))
}

// genCPUPerOp is loadgen's CPU microseconds per answered request, or -1.
// On a machine whose cores the server and loadgen share, the rate is
// about cores / (server + loadgen CPU per request).
func (r *result) genCPUPerOp() float64 {
	if r.genCPU < 0 || r.int("ops") <= 0 {
		return -1
	}
	return r.genCPU * 1e6 / float64(r.int("ops"))
}

// stepSpec is one load step.
type stepSpec struct {
	id, name, proto, addr, cases string
	conns                        int
	d                            time.Duration
	extra                        []string // more loadgen flags
	srvPID                       int      // the server measured
	daemon                       bool     // the server is the daemon
}

// step runs one load step: loadgen, the server's CPU and memory around
// it, and a CPU profile of the daemon if the step is in -profile-step.
func (b *bench) step(ctx context.Context, s stepSpec) (*result, error) {
	cpu0, cerr := procCPU(s.srvPID)
	var started func()
	var prof chan struct{}
	if b.o.profileStep[s.id] && b.pprofAddr != "" {
		// net/http/pprof takes whole seconds: the profile starts when
		// loadgen's measured run does and ends just before it.
		secs := max(1, int(s.d/time.Second))
		if s.id == "reload" {
			secs = max(1, int(min(s.d, reloadProfile)/time.Second))
		}
		prof = make(chan struct{})
		var once sync.Once
		started = func() {
			once.Do(func() {
				go func() {
					defer close(prof)
					b.fetchProfile(ctx, fmt.Sprintf("profile?seconds=%d", secs), "cpu-"+s.id+".pprof", fmt.Sprintf("CPU profile of %s (%d s)", s.id, secs))
				}()
			})
		}
	}
	r, err := b.loadgen(ctx, s, started)
	if prof != nil {
		started() // if loadgen never announced its start
		<-prof
	}
	if err != nil {
		return nil, err
	}
	r.id, r.daemon, r.dur, r.profiled = s.id, s.daemon, s.d, prof != nil
	r.cpu = -1
	if cpu1, err := procCPU(s.srvPID); err == nil && cerr == nil {
		r.cpu = cpu1 - cpu0
	}
	r.rss, _ = procStatus(s.srvPID, "VmRSS")
	if v, err := strconv.ParseFloat(r.f["elapsed_s"], 64); err == nil {
		r.dur = time.Duration(v * float64(time.Second))
	}
	return r, nil
}

// reloadProfile is the length of the reload step's CPU profile: the
// rename comes 1 s in, then the daemon's parse and build.
const reloadProfile = 5 * time.Second

// loadgen runs loadgen for one load step and parses its result line. If
// started is not nil, loadgen announces the start of its measured run and
// started is called then.
func (b *bench) loadgen(ctx context.Context, s stepSpec, started func()) (*result, error) {
	args := append([]string{"-proto", s.proto, "-addr", s.addr, "-c", strconv.Itoa(s.conns),
		"-d", s.d.String(), "-cases", filepath.Join(b.cases, s.cases)}, s.extra...)
	var stdout, stderr bytes.Buffer
	var errw io.Writer = &stderr
	if started != nil {
		args = append(args, "-announce")
		errw = &lineWatcher{w: &stderr, line: loadgenStarted, found: started}
	}
	cmd := exec.CommandContext(ctx, b.loadgenBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, errw
	err := cmd.Run()
	if lw, ok := errw.(*lineWatcher); ok {
		stderr.Write(lw.buf) // an unfinished last line
	}
	if err != nil {
		return nil, fmt.Errorf("loadgen %s: %w\n%s", s.name, err, stderr.Bytes())
	}
	r := &result{name: s.name, proto: s.proto, conns: s.conns, f: parseFields(stdout.String()), genCPU: -1}
	if ps := cmd.ProcessState; ps != nil {
		r.genCPU = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	if _, ok := r.f["ops_per_s"]; !ok {
		return nil, fmt.Errorf("loadgen %s: unexpected output %q", s.name, stdout.String())
	}
	if r.int("errors") > 0 {
		for _, l := range strings.SplitN(strings.TrimSpace(stderr.String()), "\n", 6)[:min(5, strings.Count(stderr.String(), "\n"))] {
			fmt.Fprintf(b.out, "    %s: %s\n", s.name, l)
		}
	}
	return r, nil
}

// loadgenStarted is the line loadgen -announce prints when its measured
// run begins (bench/loadgen startedLine).
const loadgenStarted = "loadgen: load started"

// lineWatcher passes writes on to w, leaving out the line it watches for
// and calling found when it sees it.
type lineWatcher struct {
	w     io.Writer
	line  string
	found func()
	buf   []byte
	seen  bool
}

func (l *lineWatcher) Write(p []byte) (int, error) {
	if l.seen {
		return l.w.Write(p)
	}
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := l.buf[:i+1]
		if string(bytes.TrimSpace(line)) == l.line {
			l.seen = true
			l.found()
		} else if _, err := l.w.Write(line); err != nil {
			return 0, err
		}
		l.buf = l.buf[i+1:]
		if l.seen {
			_, err := l.w.Write(l.buf)
			l.buf = nil
			return len(p), err
		}
	}
}

// parseFields parses loadgen's "k=v k=v …" line.
func parseFields(line string) map[string]string {
	f := map[string]string{}
	for _, kv := range strings.Fields(line) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			f[k] = v
		}
	}
	return f
}
