package fleet

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/internal/redistest"
)

// collector records applied records per key.
type collector struct {
	mu   sync.Mutex
	recs map[string]Record
}

func (c *collector) apply(r Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recs == nil {
		c.recs = map[string]Record{}
	}
	c.recs[r.Kind+"/"+r.Key] = r
}

func (c *collector) get(k string) (Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.recs[k]
	return r, ok
}

// linkState records OnLink calls.
type linkState struct {
	mu      sync.Mutex
	changes []bool
}

func (l *linkState) on(up bool, _ error) {
	l.mu.Lock()
	l.changes = append(l.changes, up)
	l.mu.Unlock()
}

func (l *linkState) saw(seq ...bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := 0
	for _, c := range l.changes {
		if i < len(seq) && c == seq[i] {
			i++
		}
	}
	return i == len(seq)
}

func startNode(t *testing.T, cfg Config, kind string) (*Fleet, *collector, *linkState) {
	t.Helper()
	f, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c, l := &collector{}, &linkState{}
	f.Handle(kind, c.apply)
	f.OnLink = l.on
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return f, c, l
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func rec(key string, d time.Duration) Record {
	return Record{Kind: "learned", Key: key, Expires: time.Now().Add(d), Data: json.RawMessage(`{"v":1}`)}
}

func TestShareAndResync(t *testing.T) {
	srv := redistest.Start(t, redistest.Binary(t))
	url := "redis://" + srv.Addr + "/0"
	a, _, la := startNode(t, Config{URL: url, Cluster: "c1", Node: "a"}, "learned")
	waitFor(t, "a's link up", 5*time.Second, func() bool { return a.Stats().Up })

	// Published before b exists: b gets it from the resync at connect.
	a.Publish(rec("early.example", time.Hour))
	waitFor(t, "a's write", 5*time.Second, func() bool { return a.Stats().Written >= 1 })
	b, cb, _ := startNode(t, Config{URL: url, Cluster: "c1", Node: "b"}, "learned")
	waitFor(t, "resync of early.example on b", 5*time.Second, func() bool {
		r, ok := cb.get("learned/early.example")
		return ok && r.Node == "a"
	})
	// Published while b listens: pub/sub.
	a.Publish(rec("late.example", time.Hour))
	waitFor(t, "late.example on b", 5*time.Second, func() bool { _, ok := cb.get("learned/late.example"); return ok })

	// Another cluster shares nothing.
	c, cc, _ := startNode(t, Config{URL: url, Cluster: "c2", Node: "c"}, "learned")
	d, _, _ := startNode(t, Config{URL: url, Cluster: "c2", Node: "d"}, "learned")
	waitFor(t, "c's and d's links up", 5*time.Second, func() bool { return c.Stats().Up && d.Stats().Up })
	b.Publish(rec("b.example", time.Hour))
	waitFor(t, "b's write", 5*time.Second, func() bool { return b.Stats().Written >= 1 })
	d.Publish(rec("d.example", time.Hour)) // written after b's: c gets it, and would have got b's first
	waitFor(t, "d's record on c", 5*time.Second, func() bool { _, ok := cc.get("learned/d.example"); return ok })
	for _, k := range []string{"learned/early.example", "learned/late.example", "learned/b.example"} {
		if _, ok := cc.get(k); ok {
			t.Errorf("cluster c2 received %s of cluster c1", k)
		}
	}

	// The key expires with the record.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ttl, err := rdb.PTTL(context.Background(), "tlspolicyd:c1:rec:learned:late.example").Result()
	if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("PTTL of the record = %v, %v; want about 1h", ttl, err)
	}
	nodes, err := a.Nodes(context.Background())
	if err != nil || len(nodes) != 2 || nodes[0].Node != "a" || nodes[1].Node != "b" { // c and d are in c2
		t.Errorf("Nodes = %+v, %v; want a and b", nodes, err)
	}
	if !la.saw(true) {
		t.Error("OnLink never said up")
	}
}

func TestClaimOncePerFleet(t *testing.T) {
	srv := redistest.Start(t, redistest.Binary(t))
	url := "redis://" + srv.Addr
	a, _, _ := startNode(t, Config{URL: url, Node: "a"}, "x")
	b, _, _ := startNode(t, Config{URL: url, Node: "b"}, "x")
	ctx := context.Background()
	if !a.Claim(ctx, "outbound_probe_failed", "bank.example", time.Hour) {
		t.Fatal("first claim refused")
	}
	if b.Claim(ctx, "outbound_probe_failed", "bank.example", time.Hour) {
		t.Fatal("second node's claim granted: the alert would be sent twice")
	}
	if !b.Claim(ctx, "cert_expiring", "bank.example", time.Hour) {
		t.Fatal("claim of another kind refused")
	}
	srv.Kill()
	if !b.Claim(ctx, "outbound_probe_failed", "other.example", time.Hour) {
		t.Fatal("with Redis down a claim must be granted (a duplicate alert beats none)")
	}
}

func TestOutageQueuesAndResyncs(t *testing.T) {
	srv := redistest.Start(t, redistest.Binary(t))
	url := "redis://" + srv.Addr
	a, _, la := startNode(t, Config{URL: url, Node: "a", Heartbeat: 200 * time.Millisecond}, "learned")
	b, cb, lb := startNode(t, Config{URL: url, Node: "b", Heartbeat: 200 * time.Millisecond}, "learned")
	waitFor(t, "both links up", 5*time.Second, func() bool { return a.Stats().Up && b.Stats().Up })

	srv.Kill()
	waitFor(t, "a's link down", 5*time.Second, func() bool { return !a.Stats().Up })
	waitFor(t, "b's link down", 5*time.Second, func() bool { return !b.Stats().Up })
	a.Publish(rec("during.example", time.Hour))
	a.PublishEvent(map[string]string{"kind": "learned", "domain": "during.example"})
	if q := a.Stats().Queued; q != 2 {
		t.Fatalf("queued while down = %d, want 2", q)
	}
	srv.Restart()
	waitFor(t, "links up again", 15*time.Second, func() bool { return a.Stats().Up && b.Stats().Up })
	waitFor(t, "the record written meanwhile on b", 10*time.Second, func() bool {
		_, ok := cb.get("learned/during.example")
		return ok
	})
	evs, err := b.Events(context.Background(), 10)
	if err != nil || len(evs) != 1 || evs[0].Node != "a" {
		t.Fatalf("fleet events = %+v, %v; want one from a", evs, err)
	}
	if !la.saw(true, false, true) || !lb.saw(true, false, true) {
		t.Errorf("link changes a=%v b=%v; want up, down, up", la.changes, lb.changes)
	}
}

func TestPasswordFile(t *testing.T) {
	srv := redistest.Start(t, redistest.Binary(t), "--requirepass", "s3cret")
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _, _ := startNode(t, Config{URL: "redis://" + srv.Addr, PasswordFile: pw, Node: "a"}, "x")
	waitFor(t, "link up with the password from the file", 5*time.Second, func() bool { return f.Stats().Up })

	bad, _, _ := startNode(t, Config{URL: "redis://" + srv.Addr, Node: "b"}, "x")
	waitFor(t, "an error without the password", 10*time.Second, func() bool { return bad.Stats().LastError != "" })
	if bad.Stats().Up {
		t.Error("link up without the password")
	}
}

func TestQueueDropsOldest(t *testing.T) {
	q := newQueue(3)
	for i := range 5 {
		q.push(op{event: []byte{byte(i)}})
	}
	got := q.take(10)
	if len(got) != 3 || got[0].event[0] != 2 || q.dropped.Load() != 2 {
		t.Fatalf("queue kept %v, dropped %d; want the newest 3 and 2 dropped", got, q.dropped.Load())
	}
	q.push(op{event: []byte{9}})
	q.putBack(got)
	if got := q.take(10); len(got) != 3 || got[0].event[0] != 3 || got[2].event[0] != 9 {
		t.Fatalf("putBack kept %v", got)
	}
}

func TestBadURL(t *testing.T) {
	for _, u := range []string{"http://x", "redis-sentinel://127.0.0.1:26379", "redis://[::1"} {
		if _, err := New(Config{URL: u}, slog.Default()); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

// The README's ACL for the fleet's Redis user is enough for everything a
// node does: resync, writes, pub/sub, claims, heartbeats and events.
func TestREADMEACL(t *testing.T) {
	srv := redistest.Start(t, redistest.Binary(t), "--user", "default", "off",
		"--user", "tlspolicyd", "on", ">pw123", "~tlspolicyd:*", "&tlspolicyd:*", "+@read", "+@write", "+@pubsub",
		"+@stream", "+@keyspace", "+ping", "+info", "+@connection")
	url := "redis://tlspolicyd:pw123@" + srv.Addr + "/0"
	a, _, _ := startNode(t, Config{URL: url, Node: "a"}, "learned")
	b, cb, _ := startNode(t, Config{URL: url, Node: "b"}, "learned")
	waitFor(t, "both links up", 5*time.Second, func() bool { return a.Stats().Up && b.Stats().Up })
	a.Publish(rec("acl.example", time.Hour))
	a.PublishEvent(map[string]string{"kind": "learned"})
	waitFor(t, "the record on b", 5*time.Second, func() bool { _, ok := cb.get("learned/acl.example"); return ok })
	if !a.Claim(context.Background(), "kind", "acl.example", time.Minute) {
		t.Error("claim refused")
	}
	if nodes, err := b.Nodes(context.Background()); err != nil || len(nodes) != 2 {
		t.Errorf("Nodes = %v, %v", nodes, err)
	}
	waitFor(t, "the event in the stream", 5*time.Second, func() bool {
		evs, err := b.Events(context.Background(), 5)
		return err == nil && len(evs) == 1
	})
	if st := a.Stats(); st.WriteErrors != 0 {
		t.Errorf("write errors: %+v", st)
	}
}

// rediss:// with the fleet's own CA (shared_cache_ca) and a password
// file: the README's production set-up.
func TestTLSAndPassword(t *testing.T) {
	ca := probetest.NewCA(t)
	cert := ca.Issue(t, []string{"localhost"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	dir := t.TempDir()
	certFile, keyFile, caFile, pw := filepath.Join(dir, "redis.crt"), filepath.Join(dir, "redis.key"), filepath.Join(dir, "ca.crt"), filepath.Join(dir, "pw")
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string][]byte{
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		caFile:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}),
		pw:       []byte("s3cret\n"),
	} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv := redistest.StartTLS(t, redistest.Binary(t), certFile, keyFile, ca.Pool, "--requirepass", "s3cret")
	url := "rediss://localhost:" + strings.TrimPrefix(srv.Addr, "127.0.0.1:") + "/0"
	a, _, _ := startNode(t, Config{URL: url, PasswordFile: pw, CAFile: caFile, Node: "a"}, "learned")
	b, cb, _ := startNode(t, Config{URL: url, PasswordFile: pw, CAFile: caFile, Node: "b"}, "learned")
	waitFor(t, "both links up over TLS", 5*time.Second, func() bool { return a.Stats().Up && b.Stats().Up })
	a.Publish(rec("tls.example", time.Hour))
	waitFor(t, "the record on b", 5*time.Second, func() bool { _, ok := cb.get("learned/tls.example"); return ok })

	// Without the fleet's CA the server's certificate is not trusted.
	c, _, _ := startNode(t, Config{URL: url, PasswordFile: pw, Node: "c"}, "learned")
	waitFor(t, "a certificate error without the CA", 10*time.Second, func() bool {
		return strings.Contains(c.Stats().LastError, "certificate")
	})
	if c.Stats().Up {
		t.Error("link up without the fleet's CA")
	}
}
