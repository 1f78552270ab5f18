package probe

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// At most Concurrency SMTP sessions are open at once, however many probes
// run (README "Hardening and limits": 32 by default). Each server here
// holds its session 150 ms before closing it without a banner.
func TestProbeConcurrencyBound(t *testing.T) {
	const limit, targets = 2, 8
	var open, peak atomic.Int32
	var targetsList []string
	for i := range targets {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", i+1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					n := open.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					time.Sleep(150 * time.Millisecond)
					open.Add(-1)
					c.Close()
				}()
			}
		}()
		targetsList = append(targetsList, "["+l.Addr().(*net.TCPAddr).IP.String()+"]:"+fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
	}
	p := New(Config{Concurrency: limit, AllowPrivate: true, Timeout: 2 * time.Second, Resolver: "127.0.0.1:1"})
	var wg sync.WaitGroup
	for _, tg := range targetsList {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Probe(context.Background(), tg); err != nil {
				t.Errorf("probe %s: %v", tg, err)
			}
		}()
	}
	wg.Wait()
	if got := peak.Load(); got < 1 || got > limit {
		t.Errorf("%d sessions open at once, want 1..%d", got, limit)
	}
}
