package tests

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// peakRSSEnv, set in the environment of this test binary re-executed, makes
// it run os.Args[1:] and write that command's peak RSS in bytes to the file
// it names (see TestMain).
//
// A child's ru_maxrss counts the memory it had before exec: os/exec clones
// with CLONE_VM, so a daemon started by the test process reports the -race
// test binary's peak RSS when that is higher. Started by this small helper
// instead, it reports its own peak (at least the helper's few MB).
const peakRSSEnv = "TLSPOLICYD_TEST_PEAKRSS_FILE"

// peakRSSHelper runs os.Args[1:], writes its peak RSS to file and returns
// its exit code.
func peakRSSHelper(file string) int {
	// Pdeathsig follows the thread that started the child: keep it.
	runtime.LockOSThread()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "peak RSS helper: no command")
		return 2
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Killed with the helper (runBinaryRSS's timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "peak RSS helper:", err)
		return 2
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		fmt.Fprintln(os.Stderr, "peak RSS helper: no rusage")
		return 2
	}
	if err := os.WriteFile(file, []byte(strconv.FormatInt(ru.Maxrss<<10, 10)), 0o600); err != nil { // KiB on Linux
		fmt.Fprintln(os.Stderr, "peak RSS helper:", err)
		return 2
	}
	return cmd.ProcessState.ExitCode()
}

// TestPeakRSSIsTheDaemons: the daemon's peak RSS was reported as the test
// binary's (268 MB for a daemon that used 33 MB) when the test process
// had grown larger than the daemon.
func TestPeakRSSIsTheDaemons(t *testing.T) {
	ballast := make([]byte, 256<<20)
	for i := 0; i < len(ballast); i += 4096 {
		ballast[i] = 1
	}
	code, out, rss := runBinaryRSS(t, time.Minute, "--version")
	runtime.KeepAlive(ballast)
	t.Logf("tlspolicyd --version: peak RSS %d MiB", rss>>20)
	if code != 0 {
		t.Fatalf("tlspolicyd --version: exit %d, output:\n%s", code, out)
	}
	if rss <= 0 || rss > 128<<20 {
		t.Errorf("tlspolicyd --version: peak RSS %d MiB with a 256 MiB test process, want the daemon's own (under 128 MiB)", rss>>20)
	}
}
