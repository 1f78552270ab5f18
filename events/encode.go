package events

import (
	"fmt"
	"unicode/utf8"
)

// appendJSON appends e as one JSON line ('\n' included) to b, byte for byte
// what json.Marshal(e) followed by '\n' gives (the tests compare them,
// fuzzed), without its reflection: the event log's writer spent half its
// time in json.Marshal once its writes were batched.
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
// table lookup a byte instead of six comparisons (the event log's
// encoding had been 3.6 % of the daemon's CPU in the bench's policy step).
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
