// Package logtext is a log/slog handler that writes exactly the lines
// slog.NewTextHandler writes ("time=… level=INFO msg=… key=value …"), for
// the common records at a fraction of the cost.
//
// Why: the daemon logs every inbound decision that blocks or would block
// mail, a line of nine string attributes, two of which (the reason and the
// SMTP reply) are sentences of up to 250 bytes that need quoting. slog's
// text handler quotes them with strconv.AppendQuote, rune by rune, and goes
// through its general attribute machinery for each value, a tenth of the
// daemon's CPU in the policy benchmark (bench/README.md).
// BenchmarkBlockedLine measures the line alone.
//
// The fast path covers records whose attributes (and those given to
// WithAttrs) all have a non-empty key and a string, integer, float, bool or
// duration value, with no groups, ReplaceAttr or AddSource; everything
// else is handed to a slog.TextHandler built with the same options and
// attributes, so the output is byte for byte that of slog in every case
// (TestSameAsSlog, FuzzSameAsSlog).
package logtext

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// handler is the fast text handler. Handlers derived with WithAttrs share
// mu with their parent, as slog's handlers do, and so does the fallback.
type handler struct {
	w     io.Writer
	mu    *sync.Mutex
	level slog.Leveler // nil: slog.LevelInfo
	pre   []byte       // the WithAttrs attributes, formatted, each after a space
	slow  slog.Handler // slog.TextHandler with the same options and attributes
}

// lockedWriter serialises the fallback handler's writes with the fast
// path's, so that the two never interleave on a writer that is not safe
// for concurrent use.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// New returns a handler that writes to w what slog.NewTextHandler(w, opts)
// would. With AddSource or ReplaceAttr set it is that handler.
func New(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if opts == nil {
		opts = &slog.HandlerOptions{}
	}
	if opts.AddSource || opts.ReplaceAttr != nil {
		return slog.NewTextHandler(w, opts)
	}
	mu := new(sync.Mutex)
	return &handler{w: w, mu: mu, level: opts.Level, slow: slog.NewTextHandler(lockedWriter{mu, w}, opts)}
}

// Enabled reports whether l is at or above the handler's level.
func (h *handler) Enabled(_ context.Context, l slog.Level) bool {
	min := slog.LevelInfo
	if h.level != nil {
		min = h.level.Level()
	}
	return l >= min
}

// WithAttrs returns a handler whose lines carry as after the message.
func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	pre := append([]byte(nil), h.pre...)
	for _, a := range as {
		var ok bool
		if pre, ok = appendAttr(pre, a); !ok {
			// Not for the fast path: slog formats this handler's
			// lines from now on.
			return h.slow.WithAttrs(as)
		}
	}
	return &handler{w: h.w, mu: h.mu, level: h.level, pre: pre, slow: h.slow.WithAttrs(as)}
}

// WithGroup returns slog's handler: groups are not for the fast path.
func (h *handler) WithGroup(name string) slog.Handler {
	return h.slow.WithGroup(name)
}

// bufPool holds line buffers; one longer than maxKeep is not kept.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxKeep = 16 << 10

// Handle writes r as one line, or has slog write it if one of its
// attributes is not for the fast path.
func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	simple := true
	r.Attrs(func(a slog.Attr) bool {
		simple = fast(a)
		return simple
	})
	if !simple {
		return h.slow.Handle(ctx, r)
	}
	bp := bufPool.Get().(*[]byte)
	b := (*bp)[:0]
	if !r.Time.IsZero() {
		b = append(b, "time="...)
		b = appendRFC3339Millis(b, r.Time.Round(0))
		b = append(b, ' ')
	}
	b = append(b, "level="...)
	b = appendString(b, r.Level.String())
	b = append(b, " msg="...)
	b = appendString(b, r.Message)
	b = append(b, h.pre...)
	r.Attrs(func(a slog.Attr) bool {
		b, _ = appendAttr(b, a)
		return true
	})
	b = append(b, '\n')
	h.mu.Lock()
	_, err := h.w.Write(b)
	h.mu.Unlock()
	if cap(b) <= maxKeep {
		*bp = b
		bufPool.Put(bp)
	}
	return err
}

// fast reports whether a is for the fast path: a non-empty key and a
// value of a kind that slog writes without further resolution.
func fast(a slog.Attr) bool {
	if a.Key == "" {
		return false // slog elides some of these and writes others
	}
	switch a.Value.Kind() {
	case slog.KindString, slog.KindInt64, slog.KindUint64, slog.KindFloat64, slog.KindBool, slog.KindDuration:
		return true
	}
	return false
}

// appendAttr appends " key=value" as slog's text handler writes it, if a
// is for the fast path; else it returns b unchanged and false.
func appendAttr(b []byte, a slog.Attr) ([]byte, bool) {
	if !fast(a) {
		return b, false
	}
	b = append(b, ' ')
	b = appendString(b, a.Key)
	b = append(b, '=')
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		b = appendString(b, v.String())
	case slog.KindInt64:
		b = strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		b = strconv.AppendUint(b, v.Uint64(), 10)
	case slog.KindFloat64:
		b = strconv.AppendFloat(b, v.Float64(), 'g', -1, 64)
	case slog.KindBool:
		b = strconv.AppendBool(b, v.Bool())
	case slog.KindDuration:
		b = append(b, v.Duration().String()...)
	}
	return b, true
}

// appendString appends s, quoted if slog's text handler would quote it.
// Quoting printable ASCII without '"' or '\' is wrapping it in quotes,
// which is what strconv.AppendQuote, rune by rune, ends up doing for the
// daemon's reasons and replies.
func appendString(b []byte, s string) []byte {
	switch needsQuoting(s) {
	case noQuotes:
		return append(b, s...)
	case plainQuotes:
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	return strconv.AppendQuote(b, s)
}

// How appendString writes a string.
const (
	noQuotes    = iota // as is
	plainQuotes        // between quotes, nothing escaped
	escaped            // strconv.AppendQuote
)

// Byte classes for needsQuoting.
const (
	cQuote  = 1 << iota // slog quotes a string holding it
	cEscape             // strconv.Quote escapes it
	cHigh               // not ASCII: look at the rune
)

// class holds the classes of every byte value.
var class = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c >= utf8.RuneSelf:
			t[c] = cHigh
		case c < 0x20 || c == '"':
			t[c] = cQuote | cEscape
		case c == ' ' || c == '=':
			t[c] = cQuote
		case c == '\\' || c == 0x7f:
			t[c] = cEscape // not quoted for these, escaped if quoted
		}
	}
	return t
}()

// needsQuoting is slog's needsQuoting (log/slog/text_handler.go), which
// quotes an empty string, ASCII control characters, space, '=' and '"',
// and non-ASCII runes that are invalid, spaces or not printable; it also
// tells whether the quoted form needs escapes. ASCII strings take one
// table lookup a byte.
func needsQuoting(s string) int {
	if len(s) == 0 {
		return plainQuotes
	}
	var acc uint8
	for i := 0; i < len(s); i++ {
		acc |= class[s[i]]
	}
	switch {
	case acc&cHigh != 0:
		return needsQuotingRunes(s)
	case acc&cQuote == 0:
		return noQuotes
	case acc&cEscape == 0:
		return plainQuotes
	}
	return escaped
}

// needsQuotingRunes is needsQuoting for strings that are not all ASCII.
func needsQuotingRunes(s string) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if class[c]&cQuote != 0 {
				return escaped
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return escaped
		}
		i += size
	}
	return noQuotes
}

// appendRFC3339Millis is slog's (log/slog/handler.go): RFC 3339 with
// exactly three fractional digits.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...) // drop the 4th digit
}
