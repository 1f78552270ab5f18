package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// proc is a child process: the daemon or redis-server.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startProc starts bin with args, its output into logFile; env, if not
// empty, is added to this process's environment for it.
func startProc(name, logFile, bin string, env []string, args ...string) (*proc, error) {
	lf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits up to 10 s, then kills.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// waitListen waits until every address accepts connections, or the
// process exits, or the timeout passes.
func waitListen(ctx context.Context, p *proc, timeout time.Duration, addrs ...string) error {
	deadline := time.Now().Add(timeout)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, 100*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if p != nil {
				select {
				case <-p.done:
					return fmt.Errorf("%s exited before listening on %s: %v", p.name, a, p.err)
				default:
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nothing listening on %s after %s", a, timeout)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return nil
}

// procCPU returns the CPU seconds (user + system) process pid has used.
func procCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(data, ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100, nil // USER_HZ is 100 on Linux
}

// waitQuiet waits until at least minWait has passed since start and the
// process then used under quietCPU of a core in each second of a
// quietWindow. After maxWait since start it gives up waiting (quiet is
// false) but is no error: a daemon that keeps busy is measured busy.
func waitQuiet(ctx context.Context, p *proc, start time.Time, minWait, maxWait time.Duration) (st daemonState, quiet bool, err error) {
	if d := time.Until(start.Add(minWait)); d > 0 {
		select {
		case <-ctx.Done():
			return st, false, ctx.Err()
		case <-p.done:
			return st, false, fmt.Errorf("%s exited: %v", p.name, p.err)
		case <-time.After(d):
		}
	}
	prev, err := procCPU(p.pid())
	if err != nil {
		return st, false, err
	}
	var window []float64 // CPU seconds used in each of the last seconds
	for {
		select {
		case <-ctx.Done():
			return st, false, ctx.Err()
		case <-p.done:
			return st, false, fmt.Errorf("%s exited: %v", p.name, p.err)
		case <-time.After(time.Second):
		}
		cur, err := procCPU(p.pid())
		if err != nil {
			return st, false, err
		}
		window = append(window, cur-prev)
		prev = cur
		if n := int(quietWindow / time.Second); len(window) > n {
			window = window[len(window)-n:]
		}
		quiet = len(window) == int(quietWindow/time.Second) && !slices.ContainsFunc(window, func(c float64) bool { return c >= quietCPU })
		if quiet || time.Since(start) > maxWait {
			var sum float64
			for _, c := range window {
				sum += c
			}
			st = daemonState{at: time.Now(), cpu: cur, idleCPU: sum / float64(len(window))}
			st.rss, _ = procStatus(p.pid(), "VmRSS")
			return st, quiet, nil
		}
	}
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

func readFile(name string) []byte {
	b, _ := os.ReadFile(name)
	return b
}

func dirSize(dir string) int64 {
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// procStatus returns a "kB" field of /proc/PID/status in bytes.
func procStatus(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status %s: %w", pid, field, err)
			}
			return n << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}
