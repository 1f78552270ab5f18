package logtext

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"
)

// tricky are strings that exercise every quoting rule of slog's text
// handler.
var tricky = []string{
	"", "plain", "with space", "a=b", `say "hi"`, `back\slash`, "del\x7f", "tab\there",
	"nl\nend", "nul\x00", "é", "naïve text", "non\u00a0breaking", "zero\u200bwidth", "\xff\xfe",
	"emoji 😀", "TLS is required for mail from bank.example (rule bank-partners): the connection was not encrypted",
	"450 4.7.10 TLS 1.2 or newer is required for mail from p1.example (rule r-17): the connection used TLSv1; ask the postmaster of p1.example to enable STARTTLS with TLS 1.2 or newer",
	"\u2028", "ctl\x1b[31m",
}

var when = time.Date(2026, 12, 3, 11, 29, 7, 123456789, time.FixedZone("CET", 3600))

// both logs the same calls through slog's text handler and New, and
// returns the two outputs.
func both(t testing.TB, opts *slog.HandlerOptions, log func(h slog.Handler)) (want, got string) {
	t.Helper()
	var a, b bytes.Buffer
	log(slog.NewTextHandler(&a, opts))
	log(New(&b, opts))
	return a.String(), b.String()
}

func record(level slog.Level, msg string, attrs ...slog.Attr) slog.Record {
	r := slog.NewRecord(when, level, msg, 0)
	r.AddAttrs(attrs...)
	return r
}

type textMarshaler struct{}

func (textMarshaler) MarshalText() ([]byte, error) { return []byte("marshalled text"), nil }

type valuer struct{}

func (valuer) LogValue() slog.Value { return slog.StringValue("from a LogValuer") }

func TestSameAsSlog(t *testing.T) {
	ctx := context.Background()
	var cases []struct {
		name string
		log  func(h slog.Handler)
	}
	add := func(name string, log func(h slog.Handler)) {
		cases = append(cases, struct {
			name string
			log  func(h slog.Handler)
		}{name, log})
	}
	for i, s := range tricky {
		add("string value "+s, func(h slog.Handler) { _ = h.Handle(ctx, record(slog.LevelInfo, "m", slog.String("k", s))) })
		add("key "+s, func(h slog.Handler) { _ = h.Handle(ctx, record(slog.LevelInfo, "m", slog.String(s, "v"))) })
		add("message "+s, func(h slog.Handler) { _ = h.Handle(ctx, record(slog.LevelWarn, s)) })
		add("with "+s, func(h slog.Handler) {
			_ = h.WithAttrs([]slog.Attr{slog.String("server", s), slog.Int("n", i)}).Handle(ctx, record(slog.LevelInfo, "m", slog.String("k", s)))
		})
	}
	add("kinds", func(h slog.Handler) {
		_ = h.Handle(ctx, record(slog.LevelError, "kinds", slog.Int("i", -42), slog.Uint64("u", math.MaxUint64),
			slog.Float64("f", 0.1), slog.Float64("inf", math.Inf(-1)), slog.Float64("nan", math.NaN()), slog.Float64("big", 1e21),
			slog.Bool("b", true), slog.Duration("d", 1500*time.Millisecond), slog.Duration("zero", 0)))
	})
	add("fallback kinds", func(h slog.Handler) {
		_ = h.Handle(ctx, record(slog.LevelInfo, "fallback", slog.String("a", "x y"), slog.Any("err", errors.New("bad thing")),
			slog.Time("t", when), slog.Any("tm", textMarshaler{}), slog.Any("v", valuer{}), slog.Any("bytes", []byte("raw\n")),
			slog.Group("g", slog.String("in", "side")), slog.Any("nil", nil), slog.String("", "empty key"), slog.Attr{}))
	})
	add("levels", func(h slog.Handler) {
		for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelInfo + 2, slog.LevelError + 4, slog.LevelDebug - 1} {
			_ = h.Handle(ctx, record(l, "level"))
		}
	})
	add("zero time", func(h slog.Handler) {
		r := slog.NewRecord(time.Time{}, slog.LevelInfo, "no time", 0)
		r.AddAttrs(slog.String("k", "v"))
		_ = h.Handle(ctx, r)
	})
	add("many attrs", func(h slog.Handler) {
		var as []slog.Attr
		for i, s := range tricky {
			as = append(as, slog.String("k", s), slog.Int("i", i))
		}
		_ = h.WithAttrs(as[:6]).WithAttrs(as[6:10]).Handle(ctx, record(slog.LevelInfo, "many", as...))
	})
	add("group after attrs", func(h slog.Handler) {
		_ = h.WithAttrs([]slog.Attr{slog.String("server", "policyd")}).WithGroup("req").WithAttrs([]slog.Attr{slog.String("a", "b c")}).
			Handle(ctx, record(slog.LevelInfo, "grouped", slog.String("k", "v")))
	})
	add("fallback with attrs", func(h slog.Handler) {
		_ = h.WithAttrs([]slog.Attr{slog.Any("err", errors.New("x"))}).WithAttrs([]slog.Attr{slog.String("then", "fast kind")}).
			Handle(ctx, record(slog.LevelInfo, "m", slog.String("k", "v")))
	})
	add("mixed records", func(h slog.Handler) {
		h = h.WithAttrs([]slog.Attr{slog.String("component", "probe")})
		_ = h.Handle(ctx, record(slog.LevelInfo, "fast", slog.String("k", "v w")))
		_ = h.Handle(ctx, record(slog.LevelWarn, "slow", slog.Any("err", errors.New("e"))))
		_ = h.Handle(ctx, record(slog.LevelInfo, "fast again"))
	})
	add("engine line", func(h slog.Handler) { _ = h.Handle(ctx, blockedLine()) })

	for _, c := range cases {
		want, got := both(t, nil, c.log)
		if got != want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, want)
		}
	}
}

func TestOptions(t *testing.T) {
	ctx := context.Background()
	log := func(h slog.Handler) {
		for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
			if h.Enabled(ctx, l) {
				_ = h.Handle(ctx, record(l, "m", slog.String("k", "v w")))
			}
		}
	}
	var lv slog.LevelVar
	lv.Set(slog.LevelWarn)
	for name, opts := range map[string]*slog.HandlerOptions{
		"nil":        nil,
		"debug":      {Level: slog.LevelDebug},
		"warn":       {Level: slog.LevelWarn},
		"level var":  {Level: &lv},
		"add source": {AddSource: true},
		"replace": {ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == "k" {
				a.Value = slog.StringValue("replaced")
			}
			return a
		}},
	} {
		want, got := both(t, opts, log)
		if got != want {
			t.Errorf("%s:\n got %q\nwant %q", name, got, want)
		}
	}
}

// TestConcurrentFallback checks that fast and fallback lines never
// interleave on a writer that is not safe for concurrent use (run with
// -race).
func TestConcurrentFallback(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(New(&buf, nil)).With("server", "policyd")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if i%2 == 0 {
					log.Info("fast", "k", "v w")
				} else {
					log.Warn("slow", "err", errors.New("e"))
				}
			}
		}()
	}
	wg.Wait()
	lines := bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n"))
	if len(lines) != 1600 {
		t.Fatalf("%d lines, want 1600", len(lines))
	}
	for _, l := range lines {
		if !bytes.HasSuffix(l, []byte(`msg=fast server=policyd k="v w"`)) && !bytes.HasSuffix(l, []byte("msg=slow server=policyd err=e")) {
			t.Fatalf("mangled line %q", l)
		}
	}
}

func FuzzSameAsSlog(f *testing.F) {
	for _, s := range tricky {
		f.Add(s, s, "x", int64(len(s)))
	}
	f.Fuzz(func(t *testing.T, msg, key, value string, n int64) {
		ctx := context.Background()
		want, got := both(t, nil, func(h slog.Handler) {
			_ = h.WithAttrs([]slog.Attr{slog.String(key, value)}).Handle(ctx,
				record(slog.Level(n%16), msg, slog.String(key, value), slog.Int64(value, n), slog.String(msg, key)))
		})
		if got != want {
			t.Errorf("got %q\nwant %q", got, want)
		}
	})
}

// blockedLine is the record the engine logs for a blocked inbound request.
func blockedLine() slog.Record {
	return record(slog.LevelInfo, "inbound TLS policy", slog.String("event", "inbound_blocked"),
		slog.String("rule", "r-17"), slog.String("source", "table/inbound.yaml:112"), slog.String("sender", "alice@p17.example"),
		slog.String("recipient", "bob@ourcorp.example"), slog.String("client", "mx.p17.example[192.0.2.17]"),
		slog.String("tls", "TLSv1"), slog.String("reason", "TLS 1.2 or newer is required; the connection used TLSv1"),
		slog.String("action", "450 4.7.10 TLS 1.2 or newer is required for mail from p17.example (rule r-17): the connection used TLSv1; ask the postmaster of p17.example to enable STARTTLS with TLS 1.2 or newer"))
}

// BenchmarkBlockedLine measures the engine's log line for a blocked
// inbound request through slog's text handler and through New.
func BenchmarkBlockedLine(b *testing.B) {
	for name, h := range map[string]slog.Handler{
		"slog":    slog.NewTextHandler(io.Discard, nil).WithAttrs([]slog.Attr{slog.String("server", "policyd")}),
		"logtext": New(io.Discard, nil).WithAttrs([]slog.Attr{slog.String("server", "policyd")}),
	} {
		b.Run(name, func(b *testing.B) {
			r := blockedLine()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_ = h.Handle(ctx, r)
			}
		})
	}
}
