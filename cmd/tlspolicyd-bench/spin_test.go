package main

import (
	"os"
	"runtime"
	"testing"
)

// spinEnv makes this test binary, re-executed, spin on every thread
// GOMAXPROCS allows until killed: a busy process that stays above
// quietCPU on a machine whose 2 cores are shared by dozens of processes,
// where a one-thread shell loop got 4% of a core (TestWaitQuiet/busy).
const spinEnv = "TLSPOLICYD_BENCH_TEST_SPIN"

func TestMain(m *testing.M) {
	if os.Getenv(spinEnv) != "" {
		for range runtime.GOMAXPROCS(0) - 1 {
			go spin()
		}
		spin()
	}
	os.Exit(m.Run())
}

func spin() {
	for n := 0; ; n++ {
		if n == -1 {
			return
		}
	}
}
