package events

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// marshalLine is what the event log wrote before appendJSON: json.Marshal
// and a newline.
func marshalLine(e Event) ([]byte, error) {
	b, err := json.Marshal(e)
	return append(b, '\n'), err
}

// The event log's lines are exactly json.Marshal's: a reader (Tail, the
// report, jq, a log shipper) sees no difference.
func TestAppendJSONIsMarshal(t *testing.T) {
	full := Event{}
	v := reflect.ValueOf(&full).Elem()
	for i := range v.NumField() { // every field set, including any added later
		switch f := v.Field(i); f.Kind() {
		case reflect.String:
			f.SetString(v.Type().Field(i).Name + " <&> \"quoted\" \\ é \u2028")
		case reflect.Struct:
			f.Set(reflect.ValueOf(time.Date(2026, 5, 1, 12, 30, 45, 123456789, time.FixedZone("", -7*3600-30*60))))
		default:
			t.Fatalf("Event.%s is a %s: teach appendJSON and this test about it", v.Type().Field(i).Name, f.Kind())
		}
	}
	for _, tc := range []struct {
		name string
		e    Event
	}{
		{"every field", full},
		{"omitempty fields empty, reason kept", Event{Time: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), Kind: ReloadFailed}},
		{"typical inbound event", benchEvent(7)},
		{"control characters", Event{Time: time.Unix(1, 5).UTC(), Kind: InboundBlocked, Reason: "\x00\x01\b\f\n\r\t\x1f\x7f"}},
		{"invalid UTF-8", Event{Time: time.Unix(0, 0).UTC(), Kind: InboundBlocked, Domain: "a\xffb\xc3", Reason: "\xe2\x80"}},
		{"local zone", Event{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600)), Kind: CertExpiring}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := marshalLine(tc.e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := appendJSON([]byte("prefix"), tc.e)
			if err != nil || !bytes.Equal(got, append([]byte("prefix"), want...)) {
				t.Fatalf("appendJSON = %q, %v\njson.Marshal = %q", got, err, want)
			}
		})
	}
}

// A time json.Marshal refuses (year past 9999) is an error, not a line.
func TestAppendJSONBadTime(t *testing.T) {
	e := Event{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Kind: ReloadFailed}
	if _, err := marshalLine(e); err == nil {
		t.Fatal("json.Marshal accepts year 10000; the test's premise is wrong")
	}
	if b, err := appendJSON(nil, e); err == nil {
		t.Fatalf("appendJSON = %q, want an error", b)
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("bank.example", "450 4.7.10 TLS is required <x>", "no TLS", int64(1777593600), int64(0))
	f.Add("\xff\u2029", "\x00\"\\", "", int64(-62135596800), int64(999999999))
	f.Fuzz(func(t *testing.T, domain, action, reason string, sec, nsec int64) {
		e := Event{Time: time.Unix(sec, nsec).UTC(), Kind: Kind(reason + domain), Domain: domain, Rule: action + reason,
			Source: reason, Action: action, Reason: reason, Client: domain + action, Sender: action}
		want, werr := marshalLine(e)
		got, gerr := appendJSON(nil, e)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("json.Marshal error %v, appendJSON error %v", werr, gerr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("appendJSON = %q\njson.Marshal = %q", got, want)
		}
	})
}

// unmarshalLine is what decodeLine must give: json.Unmarshal's event, ok
// when it has a kind and a time.
func unmarshalLine(line []byte) (Event, bool) {
	var e Event
	if err := json.Unmarshal(line, &e); err != nil || e.Kind == "" || e.Time.IsZero() {
		return Event{}, false
	}
	return e, true
}

// sameEvent compares events as the log gives them back (times by Equal).
func sameEvent(a, b Event) bool {
	ta, tb := a.Time, b.Time
	a.Time, b.Time = time.Time{}, time.Time{}
	return a == b && ta.Equal(tb) && ta.Format(time.RFC3339Nano) == tb.Format(time.RFC3339Nano)
}

// decodeLine reads back what appendJSON wrote, by its fast path where
// nothing is escaped, and gives json.Unmarshal's answer for anything else.
func TestDecodeLine(t *testing.T) {
	plain := benchEvent(7)
	for _, tc := range []struct {
		name string
		line string
		fast bool // cut up by hand
		ok   bool
	}{
		{"typical inbound event", string(mustLine(t, plain)[:len(mustLine(t, plain))-1]), true, true},
		{"omitempty fields empty, reason kept", `{"time":"2026-05-01T00:00:00Z","kind":"reload_failed","reason":""}`, true, true},
		{"local zone", `{"time":"2026-01-02T03:04:05.5+01:00","kind":"cert_expiring","domain":"a.example","reason":"x"}`, true, true},
		{"escaped", `{"time":"2026-05-01T00:00:00Z","kind":"inbound_blocked","reason":"\u003cx\u003e \"q\""}`, false, true},
		{"fields in another order", `{"kind":"inbound_blocked","time":"2026-05-01T00:00:00Z","reason":"x"}`, false, true},
		{"an unknown field", `{"time":"2026-05-01T00:00:00Z","kind":"inbound_blocked","reason":"x","new":1}`, false, true},
		{"spaces", `{"time": "2026-05-01T00:00:00Z", "kind": "inbound_blocked", "reason": "x"}`, false, true},
		{"no reason", `{"time":"2026-05-01T00:00:00Z","kind":"inbound_blocked"}`, false, true},
		{"no kind", `{"time":"2026-05-01T00:00:00Z","reason":"x"}`, false, false},
		{"no time", `{"kind":"inbound_blocked","reason":"x"}`, false, false},
		{"a bad time", `{"time":"2026-05-01 00:00:00","kind":"inbound_blocked","reason":"x"}`, false, false},
		{"torn", `{"time":"2026-05-01T00:00:00Z","kind":"inbound_blo`, false, false},
		{"trailing garbage", `{"time":"2026-05-01T00:00:00Z","kind":"inbound_blocked","reason":"x"}}`, false, false},
		{"raw invalid UTF-8", "{\"time\":\"2026-05-01T00:00:00Z\",\"kind\":\"inbound_blocked\",\"reason\":\"\xff\"}", false, true},
		{"raw control character", "{\"time\":\"2026-05-01T00:00:00Z\",\"kind\":\"inbound_blocked\",\"reason\":\"\t\"}", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, fast := cutLine([]byte(tc.line))
			got, ok := decodeLine([]byte(tc.line))
			want, wok := unmarshalLine([]byte(tc.line))
			if fast != tc.fast || ok != tc.ok || ok != wok || !sameEvent(got, want) {
				t.Errorf("fast %v, ok %v: %+v\njson.Unmarshal (ok %v): %+v", fast, ok, got, wok, want)
			}
		})
	}
}

func FuzzDecodeLine(f *testing.F) {
	f.Add([]byte(`{"time":"2026-05-01T00:00:00Z","kind":"inbound_blocked","domain":"bank.example","reason":"x","sender":"a@b"}`))
	f.Add([]byte(`{"time":"2026-05-01T00:00:00.123+02:00","kind":"k","rule":"","reason":"x"}`))
	f.Add([]byte(`{"time":"0001-01-01T00:00:00Z","kind":"k","reason":"x"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		got, ok := decodeLine(line)
		want, wok := unmarshalLine(line)
		if ok != wok || !sameEvent(got, want) {
			t.Fatalf("decodeLine(%q) = %+v, %v\njson.Unmarshal: %+v, %v", line, got, ok, want, wok)
		}
	})
}
