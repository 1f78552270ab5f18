package policyd

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// observed is one call of Server.Observe.
type observed struct {
	sender string
	action Action
	failed bool
	d      time.Duration
}

// observer records what Server.Observe reports.
type observer struct {
	mu  sync.Mutex
	got []observed
}

func (o *observer) observe(req *Request, a Action, failed bool, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, observed{req.Get("sender"), a, failed, d})
}

func (o *observer) calls() []observed {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.got)
}

// TestServeObserve: Observe reports every reply the client gets, in raw
// mode and with blocking reads, the deferrals the server makes itself
// included (failed): for a Handler error, a panic, an invalid action and
// an overrun of RequestTimeout (answered by the watchdog). A malformed
// request gets no reply and is not reported, nor is a Handler returning
// after the watchdog has answered.
func TestServeObserve(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for mode, listen := range listenModes(t) {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			release, returned := make(chan struct{}), make(chan struct{})
			h := HandlerFunc(func(_ context.Context, r *Request) (Action, error) {
				switch r.Get("sender") {
				case "err":
					return "DUNNO", errors.New("store unavailable")
				case "panic":
					panic("nil map in rule 7")
				case "invalid":
					return "DUNNO\n\naction=OK", nil
				case "hang":
					defer close(returned)
					<-release
				}
				return "DUNNO", nil
			})
			o := &observer{}
			ts := startServer(t, &Server{Handler: h, Observe: o.observe, RequestTimeout: timeout}, listen())

			cl := dial(t, "tcp", ts.addr)
			for _, sender := range []string{"ok", "err", "panic", "invalid"} {
				cl.send("sender=" + sender + "\n\n")
				want := Action(DefaultDeferText)
				if sender == "ok" {
					want = "DUNNO"
				}
				if got := cl.reply(); got != string(want) {
					t.Fatalf("sender %s: %q, want %q", sender, got, want)
				}
			}
			cl.send("sender=hang\n\n")
			if got, err := cl.readReply(5 * time.Second); err != nil || got != DefaultDeferText {
				t.Fatalf("hanging Handler: %q, %v; want %q", got, err, DefaultDeferText)
			}
			cl.expectClosed()

			bad := dial(t, "tcp", ts.addr)
			bad.send("broken\n\n")
			bad.expectClosed()

			// The hung Handler returns now: its late action is
			// dropped, and must not be reported.
			close(release)
			<-returned
			time.Sleep(50 * time.Millisecond)

			want := []observed{
				{"ok", "DUNNO", false, 0}, {"err", DefaultDeferText, true, 0}, {"panic", DefaultDeferText, true, 0},
				{"invalid", DefaultDeferText, true, 0}, {"hang", DefaultDeferText, true, timeout},
			}
			got := o.calls()
			if len(got) != len(want) {
				t.Fatalf("observed %v, want %v", got, want)
			}
			for i, g := range got {
				w := want[i]
				if g.sender != w.sender || g.action != w.action || g.failed != w.failed {
					t.Errorf("observation %d: %+v, want %+v", i, g, w)
				}
				// The timeout's duration is at least RequestTimeout;
				// the others' well below it.
				if w.d > 0 && (g.d < w.d || g.d > w.d+2*time.Second) || w.d == 0 && (g.d < 0 || g.d >= timeout) {
					t.Errorf("observation %d (%s): duration %v, want about %v", i, g.sender, g.d, w.d)
				}
			}
		})
	}
}
