package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// appendJSON appends e as one JSON line ('\n' included) to b, byte for byte
// what json.Marshal(e) followed by '\n' gives (the tests compare them,
// fuzzed), without its reflection, which would dominate the event log
// writer's time.
func appendJSON(b []byte, e Event) ([]byte, error) {
	b = append(b, `{"time":"`...)
	b, err := e.Time.AppendText(b) // what Time.MarshalJSON writes between its quotes
	if err != nil {
		return b, fmt.Errorf("event time: %w", err)
	}
	b = append(b, `","kind":`...)
	b = appendString(b, string(e.Kind))
	b = appendField(b, `,"domain":`, e.Domain)
	b = appendField(b, `,"rule":`, e.Rule)
	b = appendField(b, `,"source":`, e.Source)
	b = appendField(b, `,"action":`, e.Action)
	b = append(b, `,"reason":`...) // not omitempty
	b = appendString(b, e.Reason)
	b = appendField(b, `,"client":`, e.Client)
	b = appendField(b, `,"sender":`, e.Sender)
	return append(b, '}', '\n'), nil
}

// appendField appends an omitempty string field.
func appendField(b []byte, name, s string) []byte {
	if s == "" {
		return b
	}
	return appendString(append(b, name...), s)
}

const hex = "0123456789abcdef"

// jsonPlain holds the ASCII bytes appendString copies as they are: one
// table lookup a byte instead of six comparisons, for the event log's
// encoding is on the policy service's hot path.
var jsonPlain = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendString appends s as a JSON string the way encoding/json does with
// HTML escaping (its default): '"', '\\' and control characters escaped
// (\b \f \n \r \t by name), '<', '>', '&', U+2028 and U+2029 as \u
// escapes, invalid UTF-8 as \ufffd.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonPlain[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(append(b, s[start:]...), '"')
}

// decodeLine decodes one line of the event log, giving what json.Unmarshal
// gives (ok is false for a line that is not a valid event: no kind, no
// time, not JSON). A line as appendJSON writes it, with nothing escaped
// (most are), is cut up by hand, every string a part of one copy of the
// line, for a scan of a full event log (Ring.Scan) decodes every line.
// Any other line goes to json.Unmarshal.
func decodeLine(line []byte) (e Event, ok bool) {
	if e, ok := cutLine(line); ok {
		return e, true
	}
	if err := json.Unmarshal(line, &e); err != nil || e.Kind == "" || e.Time.IsZero() {
		return Event{}, false
	}
	return e, true
}

// cutLine is decodeLine's fast path: ok is false unless line is exactly
// the fields of appendJSON, in its order, none escaped.
func cutLine(line []byte) (e Event, ok bool) {
	for _, c := range line {
		if c < 0x20 || c == '\\' {
			return Event{}, false
		}
	}
	rest, ok := bytes.CutPrefix(line, []byte(`{"time":"`))
	if !ok || !utf8.Valid(line) {
		return Event{}, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 || e.Time.UnmarshalText(rest[:end]) != nil || e.Time.IsZero() {
		return Event{}, false
	}
	s := string(rest[end+1:]) // the one copy
	for _, f := range [...]struct {
		name     string
		dst      *string
		required bool
	}{
		{`,"kind":"`, (*string)(&e.Kind), true},
		{`,"domain":"`, &e.Domain, false},
		{`,"rule":"`, &e.Rule, false},
		{`,"source":"`, &e.Source, false},
		{`,"action":"`, &e.Action, false},
		{`,"reason":"`, &e.Reason, true},
		{`,"client":"`, &e.Client, false},
		{`,"sender":"`, &e.Sender, false},
	} {
		v, found := strings.CutPrefix(s, f.name)
		if !found {
			if f.required {
				return Event{}, false
			}
			continue
		}
		end := strings.IndexByte(v, '"')
		if end < 0 {
			return Event{}, false
		}
		*f.dst, s = v[:end], v[end+1:]
	}
	if s != "}" || e.Kind == "" {
		return Event{}, false
	}
	return e, true
}
