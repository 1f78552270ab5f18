package socketmap

import (
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// observed is one call of Server.Observe.
type observed struct {
	mapName string
	status  Status
	d       time.Duration
}

// observer records what Server.Observe reports.
type observer struct {
	mu  sync.Mutex
	got []observed
}

func (o *observer) observe(mapName string, st Status, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, observed{mapName, st, d})
}

func (o *observer) calls() []observed {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.got)
}

// TestServerObserve: Observe reports every reply the client gets, in raw
// mode and through net.Conn, those the server makes itself included: TEMP
// for a Handler error, a panic and an overrun of RequestTimeout (answered
// by the watchdog), PERM for a bad request or a malformed netstring. A
// Handler returning after the watchdog has answered is not counted again.
func TestServerObserve(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			h := newBlocking(t)
			o := &observer{}
			s := &Server{Handler: h, Observe: o.observe, RequestTimeout: timeout}
			addr := serveTransport(t, tr.network, tr.plain, s)

			c := dial(t, tr.network, addr)
			for _, l := range []struct{ key, want string }{
				{"bank.example", "OK secure match=nexthop"},
				{"timeout.example", "TIMEOUT probe pending"},
				{"boom.example", "TEMP internal error"},
				{"err.example", "TEMP resolve err.example: store unavailable"},
				{"empty.example", "TEMP empty result"},
			} {
				if got := c.lookup("tls_policy", l.key); got != l.want {
					t.Fatalf("%s: %q, want %q", l.key, got, l.want)
				}
			}
			if wantRaw := runtime.GOOS == "linux" && tr.network == "tcp" && !tr.plain; wantRaw {
				if raw, all := rawConns(s); raw != all || all != 1 {
					t.Errorf("%d of %d connections in raw mode, want 1 of 1", raw, all)
				}
			}
			c.send("4:oops,")
			if got := c.reply(); got != "PERM bad request" {
				t.Fatalf("bad request: %q", got)
			}
			if got := c.lookup("tls_transport", "hang.example"); got != "TEMP timeout" {
				t.Fatalf("hanging lookup: %q, want TEMP timeout", got)
			}
			c.expectClosed(3 * time.Second)

			d := dial(t, tr.network, addr)
			d.send("023:tls_policy bank.example,")
			if got := d.reply(); got != "PERM bad request" {
				t.Fatalf("malformed netstring: %q", got)
			}
			d.expectClosed(3 * time.Second)

			// The hung Handler returns now: its late reply is dropped,
			// and must not be counted.
			close(h.release)
			time.Sleep(100 * time.Millisecond)

			want := []observed{
				{"tls_policy", StatusOK, 0}, {"tls_policy", StatusTimeout, 0}, {"tls_policy", StatusTemp, 0},
				{"tls_policy", StatusTemp, 0}, {"tls_policy", StatusTemp, 0}, {"", StatusPerm, 0},
				{"tls_transport", StatusTemp, timeout}, {"", StatusPerm, 0},
			}
			got := o.calls()
			if len(got) != len(want) {
				t.Fatalf("observed %v, want %v", got, want)
			}
			for i, g := range got {
				w := want[i]
				if g.mapName != w.mapName || g.status != w.status {
					t.Errorf("observation %d: %q %v, want %q %v", i, g.mapName, g.status, w.mapName, w.status)
				}
				// The timeout's duration is at least RequestTimeout;
				// the others' well below it.
				if w.d > 0 && (g.d < w.d || g.d > w.d+2*time.Second) || w.d == 0 && (g.d < 0 || g.d >= timeout) {
					t.Errorf("observation %d (%q %v): duration %v, want about %v", i, g.mapName, g.status, g.d, w.d)
				}
			}
		})
	}
}
