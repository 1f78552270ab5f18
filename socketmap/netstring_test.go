package socketmap

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// decodeAll decodes netstrings from r until an error and returns the
// payloads and that error.
func decodeAll(r io.Reader, bufSize, maxLen int) ([]string, error) {
	d := NewDecoder(bufio.NewReaderSize(r, bufSize), maxLen)
	var out []string
	for {
		p, err := d.Next()
		if err != nil {
			return out, err
		}
		out = append(out, string(p))
	}
}

// readers gives the two ways a stream arrives: all at once (the decoder's
// in-buffer fast path) and one byte per read (the blocking path, and payloads
// larger than the bufio buffer).
var readers = []struct {
	name    string
	bufSize int
	wrap    func(io.Reader) io.Reader
}{
	{"whole", 4096, func(r io.Reader) io.Reader { return r }},
	{"bytewise", 16, iotest.OneByteReader},
}

func TestDecoder(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		name    string
		in      string
		maxLen  int
		want    []string
		wantErr string // "" means a clean io.EOF after want
	}{
		{name: "empty stream", in: ""},
		{name: "one", in: "5:hello,", want: []string{"hello"}},
		{name: "zero length", in: "0:,", want: []string{""}},
		{name: "several", in: "3:abc,0:,1:x,", want: []string{"abc", "", "x"}},
		{name: "request", in: "23:tls_policy bank.example,", want: []string{"tls_policy bank.example"}},
		{name: "binary payload", in: "3:\x00,:,", want: []string{"\x00,:"}},
		{name: "larger than bufio buffer", in: "100:" + long + ",", want: []string{long}},
		{name: "exactly at cap", in: "4:abcd,", maxLen: 4, want: []string{"abcd"}},

		{name: "leading zero", in: "05:hello,", wantErr: "leading zero"},
		{name: "double zero", in: "00:,", wantErr: "leading zero"},
		{name: "non-digit", in: "x:hello,", wantErr: "non-digit"},
		{name: "minus", in: "-1:a,", wantErr: "non-digit"},
		{name: "space before length", in: " 5:hello,", wantErr: "non-digit"},
		{name: "empty length", in: ":hello,", wantErr: "empty netstring length"},
		{name: "digit then junk", in: "5x:hello,", wantErr: "missing ':'"},
		{name: "space after length", in: "5 :hello,", wantErr: "missing ':'"},
		{name: "over cap", in: "5:hello,", maxLen: 4, wantErr: "length exceeds 4"},
		{name: "over default cap", in: "10241:", wantErr: "length exceeds 10240"},
		{name: "overflow", in: "99999999999999999999999999:", wantErr: "length exceeds"},
		{name: "missing comma", in: "5:hello;", wantErr: "missing ','"},
		{name: "payload longer than length", in: "4:hello,", wantErr: "missing ','"},
		{name: "second one bad", in: "1:a,1:bc", want: []string{"a"}, wantErr: "missing ','"},
		{name: "eof in length", in: "12", wantErr: "truncated"},
		{name: "eof after colon", in: "5:", wantErr: "truncated"},
		{name: "eof in payload", in: "5:hel", wantErr: "truncated"},
		{name: "eof before comma", in: "5:hello", wantErr: "truncated"},
		{name: "eof in payload over buffer", in: "100:" + long[:50], wantErr: "truncated"},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				got, err := decodeAll(rd.wrap(strings.NewReader(tt.in)), rd.bufSize, tt.maxLen)
				if !equalStrings(got, tt.want) {
					t.Errorf("payloads = %q, want %q", got, tt.want)
				}
				if tt.wantErr == "" {
					if err != io.EOF {
						t.Fatalf("err = %v, want io.EOF", err)
					}
					return
				}
				var pe *ProtocolError
				if !errors.As(err, &pe) || !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v (%T), want *ProtocolError matching ErrMalformed", err, err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %q, want it to mention %q", err, tt.wantErr)
				}
				if strings.Contains(tt.wantErr, "truncated") && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("err = %v, want it to wrap io.ErrUnexpectedEOF", err)
				}
			})
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// countingReader counts the bytes handed out.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// endless yields 'a' forever: a client announcing a huge length and then
// streaming it.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

// TestDecoderRejectsOversizeBeforeReading checks that an announced length
// over the cap is refused at the digit that crosses it: no payload byte is
// read, and nothing proportional to the announced length is allocated.
func TestDecoderRejectsOversizeBeforeReading(t *testing.T) {
	tests := []struct {
		header   string
		consumed int // bytes the decoder may read: up to the offending digit
	}{
		{"10241:", 5},
		{"99999:", 5},
		{"1000000000:", 6},
		{"99999999999999999999:", 5},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			cr := &countingReader{r: io.MultiReader(strings.NewReader(tt.header), endless{})}
			d := NewDecoder(bufio.NewReaderSize(iotest.OneByteReader(cr), 16), 0)
			_, err := d.Next()
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "length exceeds") {
				t.Fatalf("err = %v, want length exceeds", err)
			}
			if cr.n != tt.consumed {
				t.Errorf("read %d bytes, want %d (must stop at the offending digit)", cr.n, tt.consumed)
			}
		})
	}

	// Allocation: compare bytes allocated per rejected header with the
	// announced 10^9.
	const runs = 200
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		d := NewDecoder(bufio.NewReaderSize(io.MultiReader(strings.NewReader("1000000000:"), endless{}), 16), 0)
		if _, err := d.Next(); err == nil {
			t.Fatal("oversize accepted")
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 1024 {
		t.Errorf("allocated %d bytes per rejected header, want < 1 KiB", per)
	}
}

// TestDecoderFastPathAllocs checks that decoding buffered requests does not
// allocate: the payload aliases the reader's buffer.
func TestDecoderFastPathAllocs(t *testing.T) {
	stream := bytes.Repeat([]byte("23:tls_policy bank.example,"), 1000)
	r := bytes.NewReader(stream)
	br := bufio.NewReaderSize(r, 4096)
	d := NewDecoder(br, 0)
	allocs := testing.AllocsPerRun(500, func() {
		if _, err := d.Next(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Next allocates %.1f times per netstring, want 0", allocs)
	}
}

func TestAppendNetstring(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "0:,"},
		{"hello", "5:hello,"},
		{"OK encrypt", "10:OK encrypt,"},
		{strings.Repeat("a", 12), "12:aaaaaaaaaaaa,"},
	}
	for _, tt := range tests {
		if got := string(AppendNetstring([]byte("pre"), tt.in)); got != "pre"+tt.want {
			t.Errorf("AppendNetstring(%q) = %q, want %q", tt.in, got, "pre"+tt.want)
		}
	}
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		in, name, key string
		wantErr       bool
	}{
		{in: "tls_policy bank.example", name: "tls_policy", key: "bank.example"},
		{in: "tls_policy .example", name: "tls_policy", key: ".example"},
		{in: "tls_policy [mx.example.com]:587", name: "tls_policy", key: "[mx.example.com]:587"},
		{in: "Other_Map UPPER.Example", name: "Other_Map", key: "UPPER.Example"},
		{in: "sender_transport ", name: "sender_transport", key: ""}, // null sender
		{in: "m a b", name: "m", key: "a b"},
		{in: "m  x", name: "m", key: " x"},
		{in: "", wantErr: true},
		{in: "tls_policy", wantErr: true},
		{in: " key", wantErr: true},
		{in: " ", wantErr: true},
	}
	for _, tt := range tests {
		name, key, err := parseRequest([]byte(tt.in))
		if tt.wantErr {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("parseRequest(%q) err = %v, want ErrMalformed", tt.in, err)
			}
			continue
		}
		if err != nil || name != tt.name || key != tt.key {
			t.Errorf("parseRequest(%q) = %q, %q, %v; want %q, %q", tt.in, name, key, err, tt.name, tt.key)
		}
	}
}

func TestAppendReply(t *testing.T) {
	longOK := strings.Repeat("d", MaxReplySize-len("OK "))
	tests := []struct {
		name  string
		reply Reply
		want  string
	}{
		{"ok", Reply{StatusOK, "encrypt"}, "10:OK encrypt,"},
		{"ok with attributes", Reply{StatusOK, "secure match=nexthop:dot-nexthop"}, "35:OK secure match=nexthop:dot-nexthop,"},
		{"ok at reply cap", Reply{StatusOK, longOK}, "100000:OK " + longOK + ","},
		{"ok over reply cap", Reply{StatusOK, longOK + "d"}, "19:TEMP reply too long,"},
		{"ok empty", Reply{StatusOK, ""}, "17:TEMP empty result,"},
		{"notfound", Reply{StatusNotFound, ""}, "9:NOTFOUND ,"},
		{"notfound ignores data", Reply{StatusNotFound, "x"}, "9:NOTFOUND ,"},
		{"temp", Reply{StatusTemp, "store not loaded"}, "21:TEMP store not loaded,"},
		{"temp empty reason", Reply{StatusTemp, ""}, "5:TEMP ,"},
		{"timeout", Reply{StatusTimeout, "probe"}, "13:TIMEOUT probe,"},
		{"perm", Reply{StatusPerm, "bad request"}, "16:PERM bad request,"},
		{"unknown status", Reply{Status(42), "x"}, "6:TEMP x,"},
		{"reason control bytes", Reply{StatusTemp, "a\nb\x00c\x7f"}, "11:TEMP a?b?c?,"},
		{"reason truncated", Reply{StatusPerm, strings.Repeat("r", 300)}, "205:PERM " + strings.Repeat("r", 200) + ","},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(AppendReply(nil, tt.reply)); got != tt.want {
				if len(got) > 80 {
					got = got[:80] + "…"
				}
				t.Errorf("AppendReply = %q, want %.80q", got, tt.want)
			}
		})
	}
}

func FuzzNetstring(f *testing.F) {
	for _, s := range []string{
		"", "0:,", "5:hello,", "3:abc,0:,1:x,", "23:tls_policy bank.example,",
		"05:hello,", "00:,", ":,", "x:a,", "5x:hello,", "5:hello;", "4:hello,",
		"10241:", "99999999999999999999:", "12", "5:hel", "1:a,1:bc",
		"64:" + strings.Repeat("y", 64) + ",", "65:" + strings.Repeat("y", 65) + ",",
	} {
		f.Add([]byte(s))
	}
	const maxLen = 64
	f.Fuzz(func(t *testing.T, data []byte) {
		var results [][]string
		var errs []error
		for _, rd := range readers {
			d := NewDecoder(bufio.NewReaderSize(rd.wrap(bytes.NewReader(data)), rd.bufSize), maxLen)
			var got []string
			off := 0
			for {
				p, err := d.Next()
				if err != nil {
					if err == io.EOF && off != len(data) {
						t.Fatalf("%s: io.EOF at offset %d of %d", rd.name, off, len(data))
					}
					if err != io.EOF && !errors.Is(err, ErrMalformed) {
						t.Fatalf("%s: unexpected error type %T: %v", rd.name, err, err)
					}
					errs = append(errs, err)
					break
				}
				if len(p) > maxLen {
					t.Fatalf("%s: payload of %d bytes exceeds cap %d", rd.name, len(p), maxLen)
				}
				enc := AppendNetstring(nil, string(p))
				if !bytes.HasPrefix(data[off:], enc) {
					t.Fatalf("%s: payload %q re-encodes to %q, input at %d is %q", rd.name, p, enc, off, data[off:])
				}
				off += len(enc)
				got = append(got, string(p))
			}
			results = append(results, got)
		}
		// The in-buffer and the blocking paths must agree.
		if !equalStrings(results[0], results[1]) || (errs[0] == io.EOF) != (errs[1] == io.EOF) {
			t.Fatalf("paths disagree: %q (%v) vs %q (%v)", results[0], errs[0], results[1], errs[1])
		}
	})
}

func FuzzRequest(f *testing.F) {
	for _, s := range []string{"tls_policy bank.example", "m ", "m", " k", "", "a b c", "tls_policy [x]:25",
		// Keys as an attacker could shape them (recipient domains, bounce
		// senders): control bytes, reply injection, odd forms.
		"tls_policy bank.example\r\nOK none", "tls_policy a\x00b", "tls_policy 5:OK x,", "tls_transport <>",
		"tls_policy .example", "tls_policy [127.0.0.1]:25", "tls_transport alice@partner.example",
		"tls_policy " + strings.Repeat("a", 300)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		name, key, err := parseRequest(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if name == "" || strings.Contains(name, " ") {
			t.Fatalf("bad map name %q", name)
		}
		if name+" "+key != string(data) {
			t.Fatalf("%q + %q does not rebuild %q", name, key, data)
		}
		reply := AppendReply(nil, Reply{Status: StatusOK, Data: key})
		d := NewDecoder(bufio.NewReader(bytes.NewReader(reply)), MaxReplySize)
		p, err := d.Next()
		if err != nil || !bytes.HasPrefix(p, []byte("OK ")) && !bytes.HasPrefix(p, []byte("TEMP ")) {
			t.Fatalf("reply %q does not decode: %q, %v", reply, p, err)
		}
	})
}

// parseRequest is splitRequest with copied strings, for the tests.
func parseRequest(b []byte) (mapName, key string, err error) {
	name, k, err := splitRequest(b)
	if err != nil {
		return "", "", err
	}
	return string(name), string(k), nil
}
