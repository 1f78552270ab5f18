package policyd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// fixture returns a recorded Postfix 3.7 request from testdata/.
func fixture(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func decodeAll(input string, bufSize int) ([]map[string]string, error) {
	d := NewDecoder(bufio.NewReaderSize(strings.NewReader(input), bufSize))
	var out []map[string]string
	for {
		var req Request
		if err := d.Decode(&req); err != nil {
			return out, err
		}
		out = append(out, req.Map())
	}
}

func TestDecodeValid(t *testing.T) {
	long := strings.Repeat("x", MaxLineSize-len("k="))
	tests := []struct {
		name  string
		input string
		want  []map[string]string
	}{
		{"one", "request=smtpd_access_policy\nsender=a@b.example\n\n",
			[]map[string]string{{"request": "smtpd_access_policy", "sender": "a@b.example"}}},
		{"crlf", "a=1\r\nb=2\r\n\r\n", []map[string]string{{"a": "1", "b": "2"}}},
		{"crlf end, lf lines", "a=1\nb=2\r\n\n", []map[string]string{{"a": "1", "b": "2"}}},
		{"empty values", "sender=\nencryption_protocol=\n\n", []map[string]string{{"sender": "", "encryption_protocol": ""}}},
		{"value holds =", "a==b=c\n\n", []map[string]string{{"a": "=b=c"}}},
		{"value keeps inner CR", "a=x\ry\n\n", []map[string]string{{"a": "x\ry"}}},
		{"only one CR stripped", "a=x\r\r\n\n", []map[string]string{{"a": "x\r"}}},
		{"value with spaces", "ccert_issuer=tlspolicyd+20test+20CA\nhelo_name= spaced \n\n",
			[]map[string]string{{"ccert_issuer": "tlspolicyd+20test+20CA", "helo_name": " spaced "}}},
		{"unknown attributes kept", "mail_version=3.9.0\nfuture=yes\n\n",
			[]map[string]string{{"mail_version": "3.9.0", "future": "yes"}}},
		{"several", "a=1\n\nb=2\n\na=3\n\n", []map[string]string{{"a": "1"}, {"b": "2"}, {"a": "3"}}},
		{"same name in two requests", "a=1\n\na=2\n\n", []map[string]string{{"a": "1"}, {"a": "2"}}},
		{"longest line", "k=" + long + "\n\n", []map[string]string{{"k": long}}},
		{"longest line with CRLF", "k=" + long + "\r\n\n", []map[string]string{{"k": long}}},
	}
	for _, tt := range tests {
		for _, size := range []int{16, 4096} { // 16: lines span several buffer fills
			got, err := decodeAll(tt.input, size)
			if err != io.EOF {
				t.Errorf("%s (buffer %d): err = %v, want io.EOF after the requests", tt.name, size, err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%s (buffer %d): got %d requests, want %d", tt.name, size, len(got), len(tt.want))
			}
			for i := range got {
				if !maps.Equal(got[i], tt.want[i]) {
					t.Errorf("%s (buffer %d): request %d = %q, want %q", tt.name, size, i, got[i], tt.want[i])
				}
			}
		}
	}
}

// Decoding into the same Request reuses its attribute slice, and nothing
// of the previous request survives in it: an attribute one request sent
// and the next did not (a client certificate, say) must read as absent.
// A slice grown past maxReusedAttrs by a huge request is dropped, and the
// strings of earlier requests stay valid.
func TestDecodeReusesStorage(t *testing.T) {
	var many strings.Builder
	for i := range maxReusedAttrs + 1 {
		fmt.Fprintf(&many, "a%d=x\n", i)
	}
	input := "request=smtpd_access_policy\nccert_fingerprint=AB:CD\nsender=a@b.example\n\n" +
		"request=smtpd_access_policy\nsender=c@d.example\n\n" +
		many.String() + "\n" +
		"sender=e@f.example\n\n" +
		"sender=g@h.example\nrecipient=i@j.example\n\n"
	d := NewDecoder(bufio.NewReader(strings.NewReader(input)))
	var req Request
	want := []struct {
		attrs  map[string]string // nil: only the count is checked
		n      int
		reused bool // same slice as for the previous request
	}{
		{map[string]string{"request": "smtpd_access_policy", "ccert_fingerprint": "AB:CD", "sender": "a@b.example"}, 3, false},
		{map[string]string{"request": "smtpd_access_policy", "sender": "c@d.example"}, 2, true},
		{nil, maxReusedAttrs + 1, false}, // more than the slice has room for
		// A slice with room for more than maxReusedAttrs is not kept.
		{map[string]string{"sender": "e@f.example"}, 1, false},
		{map[string]string{"sender": "g@h.example", "recipient": "i@j.example"}, 2, true},
	}
	var prev *attr
	var senders, wantSenders []string
	for i, w := range want {
		if err := d.Decode(&req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if req.Len() != w.n || (w.attrs != nil && !maps.Equal(req.Map(), w.attrs)) {
			t.Errorf("request %d = %q, want %d attributes %q", i, req.Map(), w.n, w.attrs)
		}
		if _, ok := req.Lookup("ccert_fingerprint"); ok != (i == 0) {
			t.Errorf("request %d: ccert_fingerprint present = %v", i, ok)
		}
		cur := unsafe.SliceData(req.pairs)
		if reused := prev != nil && cur == prev; reused != w.reused {
			t.Errorf("request %d: attribute slice reused = %v, want %v", i, reused, w.reused)
		}
		prev = cur
		if w.attrs != nil {
			senders = append(senders, req.Get("sender"))
			wantSenders = append(wantSenders, w.attrs["sender"])
		}
	}
	if err := d.Decode(&req); err != io.EOF {
		t.Errorf("after the requests: %v, want io.EOF", err)
	}
	if !slices.Equal(senders, wantSenders) {
		t.Errorf("earlier requests' senders now read %q, want %q", senders, wantSenders)
	}
}

func TestDecodeMalformed(t *testing.T) {
	okLine := "a=1\n"
	// A request of many short lines just over the cap, every line valid.
	var big strings.Builder
	for i := 0; big.Len() <= MaxRequestSize; i++ {
		big.WriteString("attr")
		big.WriteString(strings.Repeat("0", 6))
		big.WriteString(string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676%26)))
		big.WriteString("=" + strings.Repeat("v", 100) + "\n")
	}
	big.WriteString("\n")
	tests := []struct {
		name  string
		input string
		want  error
		line  int
	}{
		{"no equals", "request=smtpd_access_policy\nsender\n\n", ErrMissingEquals, 2},
		{"empty name", okLine + "=value\n\n", ErrEmptyName, 2},
		{"repeated attribute", "a=1\nb=2\na=3\n\n", ErrDuplicateAttribute, 3},
		{"repeated empty value", "sender=\nsender=\n\n", ErrDuplicateAttribute, 2},
		{"line too long", "k=" + strings.Repeat("x", MaxLineSize) + "\n\n", ErrLineTooLong, 1},
		{"line too long, no end", "k=" + strings.Repeat("x", 3*MaxLineSize), ErrLineTooLong, 1},
		{"request too large", big.String(), ErrRequestTooLarge, 0},
		{"EOF inside line", "a=1\nb=", io.ErrUnexpectedEOF, 2},
		{"EOF before empty line", "a=1\nb=2\n", io.ErrUnexpectedEOF, 3},
		{"EOF after CR", "a=1\r", io.ErrUnexpectedEOF, 1},
		{"empty request", "\n", ErrEmptyRequest, 1},
		{"empty request CRLF", "\r\n", ErrEmptyRequest, 1},
		{"binary", "\x00\x01\x02\xff\n\n", ErrMissingEquals, 1},
	}
	for _, tt := range tests {
		for _, size := range []int{16, 4096} {
			_, err := decodeAll(tt.input, size)
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Errorf("%s (buffer %d): err = %v, want *ProtocolError", tt.name, size, err)
				continue
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("%s (buffer %d): err = %v, want cause %v", tt.name, size, err, tt.want)
			}
			if tt.line != 0 && pe.Line != tt.line {
				t.Errorf("%s (buffer %d): line %d, want %d", tt.name, size, pe.Line, tt.line)
			}
		}
	}
}

// A line over the cap must be refused before the decoder copies more than
// the cap plus one buffer fill, however much the client sends.
func TestDecodeCapsBeforeBuffering(t *testing.T) {
	for _, tt := range []struct {
		name  string
		input io.Reader
		want  error
	}{
		{"endless line", endless('x'), ErrLineTooLong},
		{"endless request", endlessLines(), ErrRequestTooLarge},
	} {
		cr := &countingReader{r: tt.input}
		d := NewDecoder(bufio.NewReaderSize(cr, 4096))
		err := d.Decode(&Request{})
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
		if limit := MaxRequestSize + 2*4096; cr.n > limit {
			t.Errorf("%s: read %d bytes before refusing, want ≤ %d", tt.name, cr.n, limit)
		}
		if cap(d.buf) > 2*MaxRequestSize { // append may round the capacity up
			t.Errorf("%s: buffer grew to %d bytes", tt.name, cap(d.buf))
		}
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

type endlessReader func(p []byte) int

func (f endlessReader) Read(p []byte) (int, error) { return f(p), nil }

func endless(b byte) io.Reader {
	return endlessReader(func(p []byte) int {
		for i := range p {
			p[i] = b
		}
		return len(p)
	})
}

// endlessLines sends distinct valid attribute lines forever.
func endlessLines() io.Reader {
	var pending []byte
	i := 0
	return endlessReader(func(p []byte) int {
		for len(pending) < len(p) {
			pending = append(pending, "a"...)
			pending = append(pending, bytes.Repeat([]byte{'0'}, 8)...)
			pending = append(pending, []byte(strings.Repeat("z", i%7))...)
			pending = append(pending, byte('a'+i%26), byte('a'+i/26%26), byte('a'+i/676%26), '=', 'v', '\n')
			i++
		}
		n := copy(p, pending)
		pending = pending[n:]
		return n
	})
}

// The recorded Postfix 3.7 requests decode to the attributes Postfix sent.
func TestDecodeFixtures(t *testing.T) {
	order := strings.Fields(`request protocol_state protocol_name client_address client_name client_port
		reverse_client_name server_address server_port helo_name sender recipient recipient_count
		queue_id instance size etrn_domain stress sasl_method sasl_username sasl_sender ccert_subject
		ccert_issuer ccert_fingerprint ccert_pubkey_fingerprint encryption_protocol encryption_cipher
		encryption_keysize policy_context`)
	tests := []struct {
		file string
		want map[string]string
	}{
		{"postfix37-rcpt-plain.txt", map[string]string{
			"sender": "alice@bank.example", "recipient": "legal@ourcorp.example",
			"encryption_protocol": "", "encryption_cipher": "", "encryption_keysize": "0",
			"ccert_fingerprint": "", "client_port": "36680"}},
		{"postfix37-rcpt-tls13.txt", map[string]string{
			"sender": "alice@bank.example", "encryption_protocol": "TLSv1.3",
			"encryption_cipher": "TLS_AES_256_GCM_SHA384", "encryption_keysize": "256",
			"ccert_fingerprint": ""}},
		{"postfix37-rcpt-tls12-client-cert.txt", map[string]string{
			"encryption_protocol": "TLSv1.2", "encryption_cipher": "ECDHE-RSA-AES256-GCM-SHA384",
			"ccert_fingerprint":        "21:C7:E4:04:AF:B2:95:05:4A:C0:0B:4C:2C:0E:48:3B:43:8B:97:C8:5E:09:B1:EB:EF:D5:79:8F:C4:8A:BC:B9",
			"ccert_pubkey_fingerprint": "7F:D3:0D:B2:D6:D3:F8:42:53:18:30:26:88:0D:8E:8B:3D:F1:FB:F0:3B:9D:AE:08:1F:BB:D3:CC:BF:D5:B8:1A",
			"ccert_subject":            "", "ccert_issuer": ""}},
		{"postfix37-rcpt-null-sender.txt", map[string]string{
			"sender": "", "recipient": "postmaster@ourcorp.example", "queue_id": ""}},
	}
	common := map[string]string{
		"request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
		"client_address": "127.0.0.1", "client_name": "localhost", "helo_name": "vm",
		"recipient_count": "0", "queue_id": "", "size": "0", "policy_context": "",
	}
	for _, tt := range tests {
		got, err := decodeAll(string(fixture(t, tt.file)), 4096)
		if err != io.EOF || len(got) != 1 {
			t.Fatalf("%s: %d requests, err %v; want 1 request then io.EOF", tt.file, len(got), err)
		}
		req := NewRequest(got[0])
		if req.Len() != 29 {
			t.Errorf("%s: %d attributes, want 29", tt.file, req.Len())
		}
		for _, name := range order {
			if _, ok := req.Lookup(name); !ok {
				t.Errorf("%s: attribute %s missing", tt.file, name)
			}
		}
		for name, want := range common {
			if got := req.Get(name); got != want {
				t.Errorf("%s: %s = %q, want %q", tt.file, name, got, want)
			}
		}
		for name, want := range tt.want {
			if got := req.Get(name); got != want {
				t.Errorf("%s: %s = %q, want %q", tt.file, name, got, want)
			}
		}
	}
}

func TestAppendAction(t *testing.T) {
	tests := []struct {
		action Action
		want   string // "" = refused
	}{
		{"DUNNO", "action=DUNNO\n\n"},
		{"450 4.7.10 TLS is required for mail from bank.example", "action=450 4.7.10 TLS is required for mail from bank.example\n\n"},
		{"PREPEND X-TLS-Policy: would defer (rule pilot)", "action=PREPEND X-TLS-Policy: would defer (rule pilot)\n\n"},
		{"", ""},
		{"DUNNO\n\naction=OK", ""},
		{"DUNNO\naction=OK", ""},
		{"DUNNO\r\n", ""},
		{"550 5.7.10 x\x00OK", ""},
		{"\n", ""},
	}
	for _, tt := range tests {
		got, err := AppendAction([]byte("prefix:"), tt.action)
		if tt.want == "" {
			if !errors.Is(err, ErrInvalidAction) || string(got) != "prefix:" {
				t.Errorf("AppendAction(%q) = %q, %v; want it refused with ErrInvalidAction, dst unchanged", tt.action, got, err)
			}
			if ValidAction(tt.action) {
				t.Errorf("ValidAction(%q) = true", tt.action)
			}
			continue
		}
		if err != nil || string(got) != "prefix:"+tt.want {
			t.Errorf("AppendAction(%q) = %q, %v; want %q", tt.action, got, err, "prefix:"+tt.want)
		}
	}
}

func TestAppendRequest(t *testing.T) {
	tests := []struct {
		attrs map[string]string
		want  string // "" = refused
	}{
		{map[string]string{"sender": "a@b.example", "request": "smtpd_access_policy"},
			"request=smtpd_access_policy\nsender=a@b.example\n\n"},
		{map[string]string{"a": "x\r"}, "a=x\r\r\n\n"},
		{map[string]string{"a": "=="}, "a===\n\n"},
		{nil, ""},
		{map[string]string{"": "x"}, ""},
		{map[string]string{"a=b": "x"}, ""},
		{map[string]string{"a\n": "x"}, ""},
		{map[string]string{"a": "x\ny=z"}, ""},
	}
	for _, tt := range tests {
		got, err := AppendRequest(nil, NewRequest(tt.attrs))
		if tt.want == "" {
			if err == nil {
				t.Errorf("AppendRequest(%q) = %q, want an error", tt.attrs, got)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("AppendRequest(%q) = %q, %v; want %q", tt.attrs, got, err, tt.want)
			continue
		}
		back, err := decodeAll(string(got), 4096)
		if err != io.EOF || len(back) != 1 || !maps.Equal(back[0], tt.attrs) {
			t.Errorf("AppendRequest(%q) decodes back to %q, %v", tt.attrs, back, err)
		}
	}
}

func FuzzPolicyRequest(f *testing.F) {
	for _, name := range []string{"postfix37-rcpt-plain.txt", "postfix37-rcpt-tls13.txt",
		"postfix37-rcpt-tls12-client-cert.txt", "postfix37-rcpt-null-sender.txt"} {
		b := fixture(f, name)
		f.Add(b)
		f.Add(append(append([]byte{}, b...), b...))              // two on one connection
		f.Add(bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))) // CRLF
		f.Add(b[:len(b)-1])                                      // EOF before the empty line
	}
	for _, s := range []string{
		"a=1\n\n", "a=1\na=2\n\n", "noequals\n\n", "=v\n\n", "\n", "\r\n", "a=1\r\r\n\n",
		"a=x\ry\n\n", "a=\x00\n\n", "a==\n\nb=\n\n", "a=1\nb=", "a=1\r",
		// Values an SMTP client controls (sender, recipient, helo_name,
		// client_name via PTR) trying to smuggle attributes or actions.
		"sender=a@b\r\nrecipient=x\n\n", "helo_name=x\raction=OK\n\n", "sender=<>\x00action=OK\n\n",
		"client_name=" + strings.Repeat("a.", 4000) + "\n\n", "request=smtpd_access_policy\nrequest=x\n\n",
		"k=" + strings.Repeat("x", MaxLineSize) + "\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		src := bytes.NewReader(input)
		br := bufio.NewReaderSize(src, 16)
		d := NewDecoder(br)
		consumed := 0
		for {
			var req Request
			err := d.Decode(&req)
			if err != nil {
				var pe *ProtocolError
				if err != io.EOF && !errors.As(err, &pe) {
					t.Fatalf("Decode: error %v is neither io.EOF nor *ProtocolError", err)
				}
				return
			}
			end := len(input) - src.Len() - br.Buffered()
			raw := input[consumed:end]
			consumed = end

			// Reference parse of the bytes the request came from: every
			// line but the last is one attribute, no name repeated.
			lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
			if last := lines[len(lines)-1]; last != "" && last != "\r" {
				t.Fatalf("request %q does not end with an empty line", raw)
			}
			lines = lines[:len(lines)-1]
			if len(lines) != req.Len() {
				t.Fatalf("request %q: %d attribute lines, %d attributes (repeated name accepted?)", raw, len(lines), req.Len())
			}
			for _, l := range lines {
				l = strings.TrimSuffix(l, "\r")
				name, value, ok := strings.Cut(l, "=")
				if !ok || name == "" || len(l) > MaxLineSize {
					t.Fatalf("accepted bad line %q", l)
				}
				if v, ok := req.Lookup(name); !ok || v != value {
					t.Fatalf("line %q decoded as %q=%q", l, name, v)
				}
			}

			enc, err := AppendRequest(nil, &req)
			if err != nil {
				t.Fatalf("accepted request %q does not re-encode: %v", raw, err)
			}
			var again Request
			if err := NewDecoder(bufio.NewReader(bytes.NewReader(enc))).Decode(&again); err != nil {
				t.Fatalf("re-encoded %q: %v", enc, err)
			}
			if !maps.Equal(req.Map(), again.Map()) {
				t.Fatalf("re-encoded request differs: %q != %q", again.Map(), req.Map())
			}
		}
	})
}

func BenchmarkParseRequest(b *testing.B) {
	raw := fixture(b, "postfix37-rcpt-tls13.txt")
	// "buffered": the request is in the reader's buffer before Decode, as
	// in the server, which decodes once session.Complete says it is
	// whole (decodeBuffered's path); "lines": Decode reads it itself.
	for _, buffered := range []bool{true, false} {
		name := "lines"
		if buffered {
			name = "buffered"
		}
		b.Run(name, func(b *testing.B) {
			rd := bytes.NewReader(raw)
			br := bufio.NewReader(rd)
			d := NewDecoder(br)
			var req Request
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(raw)
				br.Reset(rd)
				if buffered {
					_, _ = br.Peek(len(raw))
				}
				if err := d.Decode(&req); err != nil {
					b.Fatal(err)
				}
			}
			if req.Len() != 29 {
				b.Fatalf("%d attributes", req.Len())
			}
		})
	}
}

// FuzzDecodePaths decodes the same stream twice, with the whole stream in
// the reader's buffer (so that Decode takes decodeBuffered's path where
// it can) and line by line only, and requires the same requests and the
// same errors from both.
func FuzzDecodePaths(f *testing.F) {
	for _, name := range []string{"postfix37-rcpt-plain.txt", "postfix37-rcpt-tls12-client-cert.txt"} {
		b := fixture(f, name)
		f.Add(append(append([]byte{}, b...), b...))
		f.Add(bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")))
		f.Add(b[:len(b)-1])
	}
	for _, s := range []string{
		"a=1\n\n", "a=1\na=2\n\n", "noequals\n\n", "=v\n\n", "\n", "\r\n", "a=1\r\r\n\n", "a=1\n\r\n",
		"a=1\nb=2\nc=3\n\nd\n\n", "a=1\n\n\n", "a=x\ry\n\n", "a=1\nb=", "a=1\r",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) > 3000 {
			return // the fast reader's buffer must hold it all
		}
		srcA, srcB := bytes.NewReader(input), bytes.NewReader(input)
		fast := NewDecoder(bufio.NewReaderSize(srcA, 4096))
		_, _ = fast.r.Peek(len(input))
		slow := NewDecoder(bufio.NewReaderSize(srcB, 4096))
		slow.slowOnly = true
		for i := 0; ; i++ {
			var a, b Request
			errA, errB := fast.Decode(&a), slow.Decode(&b)
			if fmt.Sprint(errA) != fmt.Sprint(errB) {
				t.Fatalf("request %d of %q: error %v buffered, %v line by line", i, input, errA, errB)
			}
			if errA != nil {
				return
			}
			if !maps.Equal(a.Map(), b.Map()) {
				t.Fatalf("request %d of %q: %q buffered, %q line by line", i, input, a.Map(), b.Map())
			}
			var orderA, orderB []string
			for n := range a.All() {
				orderA = append(orderA, n)
			}
			for n := range b.All() {
				orderB = append(orderB, n)
			}
			if !slices.Equal(orderA, orderB) {
				t.Fatalf("request %d of %q: order %q buffered, %q line by line", i, input, orderA, orderB)
			}
			usedA := len(input) - srcA.Len() - fast.r.Buffered()
			usedB := len(input) - srcB.Len() - slow.r.Buffered()
			if usedA != usedB {
				t.Fatalf("request %d of %q: %d bytes consumed buffered, %d line by line", i, input, usedA, usedB)
			}
		}
	})
}

// TestRequestAccessors checks Get, Lookup, Len, All, Map and Set on
// requests built in every way, including names that share a hash slot
// (attrHash reads only a name's length and first and last bytes), probing
// that wraps around the index, and more attributes than the index holds.
func TestRequestAccessors(t *testing.T) {
	// Names of the form "c?d" all share one slot.
	colliding := func(first, last byte, n int) []attr {
		var as []attr
		for i := range n {
			as = append(as, attr{string([]byte{first, 'A' + byte(i), last}), fmt.Sprint("v", i)})
		}
		return as
	}
	// A first and last byte whose 3-byte names hash to the last slot, so
	// that probing wraps around to slot 0.
	var wrapFirst, wrapLast byte
	for c := byte('a'); c <= 'z' && wrapFirst == 0; c++ {
		for e := byte('a'); e <= 'z'; e++ {
			if attrHash(string([]byte{c, 'x', e})) == attrIndexSlots-1 {
				wrapFirst, wrapLast = c, e
				break
			}
		}
	}
	if wrapFirst == 0 {
		t.Fatal("no 3-byte name hashes to the last slot")
	}
	many := func(n int) []attr {
		var as []attr
		for i := range n {
			as = append(as, attr{fmt.Sprintf("n%03d", i), fmt.Sprint(i)})
		}
		return as
	}
	toMap := func(as []attr) map[string]string {
		m := map[string]string{}
		for _, a := range as {
			m[a.name] = a.value
		}
		return m
	}
	sorted := func(as []attr) []attr {
		return slices.SortedFunc(slices.Values(as), func(a, b attr) int { return strings.Compare(a.name, b.name) })
	}
	decode := func(as []attr) *Request {
		var b strings.Builder
		for _, a := range as {
			b.WriteString(a.name + "=" + a.value + "\n")
		}
		var r Request
		if err := NewDecoder(bufio.NewReader(strings.NewReader(b.String() + "\n"))).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	// set applies Set to r for each of as and returns r.
	set := func(r *Request, as ...attr) *Request {
		for _, a := range as {
			r.Set(a.name, a.value)
		}
		return r
	}
	mixed := []attr{{"sender", "a@b.example"}, {"request", "smtpd_access_policy"}, {"stress", ""}, {"size", "0"}}
	coll := colliding('s', 'r', 12) // 12 names in one slot
	wrap := colliding(wrapFirst, wrapLast, 5)

	tests := []struct {
		name   string
		req    *Request
		want   []attr // in All's order
		absent []string
	}{
		{"zero", &Request{}, nil, []string{"sender", ""}},
		{"NewRequest, name order", NewRequest(toMap(mixed)), sorted(mixed), []string{"recipient", "senders", ""}},
		{"NewRequest(nil)", NewRequest(nil), nil, []string{"a"}},
		{"decoded, order received", decode(mixed), mixed, []string{"recipient", "s"}},
		{"Set replaces in place, adds at the end",
			set(decode(mixed), attr{"request", "x"}, attr{"recipient", "c@d.example"}, attr{"stress", "yes"}),
			[]attr{{"sender", "a@b.example"}, {"request", "x"}, {"stress", "yes"}, {"size", "0"}, {"recipient", "c@d.example"}},
			[]string{"recipients"}},
		{"colliding names", decode(coll), coll, []string{"sZr", "sr", "s r"}},
		{"colliding names, Set", set(decode(coll), attr{"sCr", "new"}, attr{"sZr", "z"}),
			append(append(slices.Clone(coll[:2]), attr{"sCr", "new"}), append(slices.Clone(coll[3:]), attr{"sZr", "z"})...),
			[]string{"sYr"}},
		{"probing wraps around", decode(wrap), wrap, []string{string([]byte{wrapFirst, 'Z', wrapLast})}},
		{"index full", decode(many(maxIndexedAttrs)), many(maxIndexedAttrs), []string{"n064", "n"}},
		{"index full, Set one more and replace",
			set(decode(many(maxIndexedAttrs)), attr{"n064", "64"}, attr{"n000", "zero"}, attr{"n063", "last"}),
			append(append([]attr{{"n000", "zero"}}, many(maxIndexedAttrs + 1)[1:63]...), attr{"n063", "last"}, attr{"n064", "64"}),
			[]string{"n065"}},
		{"more than the index holds, decoded", decode(many(3 * maxIndexedAttrs)), many(3 * maxIndexedAttrs), []string{"n999", ""}},
		{"more than the index holds, NewRequest", NewRequest(toMap(many(100))), many(100), []string{"n100"}},
		{"more than the index holds, Set", set(NewRequest(toMap(many(100))), attr{"n050", "x"}, attr{"extra", "y"}),
			append(append(append(many(100)[:50:50], attr{"n050", "x"}), many(100)[51:]...), attr{"extra", "y"}),
			[]string{"n100"}},
		{"empty name by Set", set(&Request{}, attr{"", "e"}, attr{"a", "1"}), []attr{{"", "e"}, {"a", "1"}}, []string{"b"}},
	}
	for _, tt := range tests {
		r := tt.req
		if r.Len() != len(tt.want) {
			t.Errorf("%s: Len = %d, want %d", tt.name, r.Len(), len(tt.want))
		}
		var all []attr
		for name, value := range r.All() {
			all = append(all, attr{name, value})
		}
		if !slices.Equal(all, tt.want) {
			t.Errorf("%s: All = %q, want %q", tt.name, all, tt.want)
		}
		if m := r.Map(); !maps.Equal(m, toMap(tt.want)) {
			t.Errorf("%s: Map = %q, want %q", tt.name, m, toMap(tt.want))
		} else if len(m) > 0 {
			clear(m) // a copy: r keeps its attributes
			if r.Len() != len(tt.want) {
				t.Errorf("%s: clearing Map's result changed the request", tt.name)
			}
		}
		for _, a := range tt.want {
			if v, ok := r.Lookup(a.name); !ok || v != a.value {
				t.Errorf("%s: Lookup(%q) = %q, %v; want %q, true", tt.name, a.name, v, ok, a.value)
			}
			if v := r.Get(a.name); v != a.value {
				t.Errorf("%s: Get(%q) = %q, want %q", tt.name, a.name, v, a.value)
			}
		}
		for _, name := range tt.absent {
			if v, ok := r.Lookup(name); ok || v != "" {
				t.Errorf("%s: Lookup(%q) = %q, %v; want absent", tt.name, name, v, ok)
			}
			if v := r.Get(name); v != "" {
				t.Errorf("%s: Get(%q) = %q, want \"\"", tt.name, name, v)
			}
		}
		// Stopping All early.
		n := 0
		for range r.All() {
			n++
			break
		}
		if want := min(len(tt.want), 1); n != want {
			t.Errorf("%s: All yielded %d after break, want %d", tt.name, n, want)
		}
	}
	if h := attrHash(coll[0].name); attrHash(coll[1].name) != h || attrHash("sZr") != h {
		t.Error("colliding names do not share a slot")
	}
}

// A name repeated in a request with more attributes than the index holds
// is found as in a short one: the error names the later line.
func TestDecodeDuplicateBeyondIndex(t *testing.T) {
	for _, n := range []int{2, maxIndexedAttrs - 1, maxIndexedAttrs, maxIndexedAttrs + 1, 500} {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "n%03d=%d\n", i, i)
		}
		b.WriteString("n001=again\nlater=x\nn000=again\n\n")
		var r Request
		err := NewDecoder(bufio.NewReader(strings.NewReader(b.String()))).Decode(&r)
		var pe *ProtocolError
		if !errors.As(err, &pe) || !errors.Is(err, ErrDuplicateAttribute) || pe.Line != n+1 || pe.Name != "n001" {
			t.Errorf("%d attributes then a repeat: %v, want a repeated n001 at line %d", n, err, n+1)
		}
	}
}

// TestDecoderDropsGrownBuffers checks that a request far larger than
// Postfix's does not leave its line buffer and line positions with the
// connection's Decoder, while requests of Postfix's size keep reusing
// theirs.
func TestDecoderDropsGrownBuffers(t *testing.T) {
	var big strings.Builder
	for i := 0; big.Len() < MaxRequestSize-100; i++ {
		fmt.Fprintf(&big, "a%d=\n", i)
	}
	big.WriteString("\n")
	normal := fixture(t, "postfix37-rcpt-tls13.txt")
	in := string(normal) + big.String() + string(normal)
	d := NewDecoder(bufio.NewReaderSize(strings.NewReader(in), 16))
	var req Request
	for i, want := range []int{29, 0, 29} {
		if err := d.Decode(&req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if want > 0 && req.Len() != want {
			t.Fatalf("request %d: %d attributes, want %d", i, req.Len(), want)
		}
		if cap(d.spans) > maxReusedAttrs || cap(d.buf) > maxKeptBuf {
			t.Errorf("after request %d the decoder keeps room for %d line positions and %d bytes", i, cap(d.spans), cap(d.buf))
		}
	}
}
