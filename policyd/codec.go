package policyd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Size limits of a request. Postfix 3.7 sends about 600 bytes at RCPT; the
// caps bound the memory a client can make a connection hold.
const (
	// MaxLineSize is the longest "name=value" line accepted, in bytes,
	// without its line end.
	MaxLineSize = 8 << 10
	// MaxRequestSize is the largest request accepted, in bytes, counting
	// line ends and the final empty line.
	MaxRequestSize = 64 << 10
)

// Causes of a ProtocolError, for errors.Is.
var (
	ErrLineTooLong        = errors.New("line longer than 8 KiB")
	ErrRequestTooLarge    = errors.New("request larger than 64 KiB")
	ErrMissingEquals      = errors.New(`line without "="`)
	ErrEmptyName          = errors.New("empty attribute name")
	ErrDuplicateAttribute = errors.New("repeated attribute")
	ErrEmptyRequest       = errors.New("empty request (no attributes before the empty line)")
	ErrInvalidAction      = errors.New("action is empty or contains a line break or NUL")
)

// ProtocolError reports a request that breaks the policy delegation
// protocol. The connection it came on cannot be trusted to be in step any
// more and must be closed without a reply.
type ProtocolError struct {
	// Line is the 1-based line of the request at fault.
	Line int
	// Name is the attribute name involved, when there is one.
	Name string
	// Err is the cause: one of the Err… variables of this package, or
	// io.ErrUnexpectedEOF when the stream ended inside a request.
	Err error
}

// Error describes the fault.
func (e *ProtocolError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("policy protocol error: line %d: %v: %.64q", e.Line, e.Err, e.Name)
	}
	return fmt.Sprintf("policy protocol error: line %d: %v", e.Line, e.Err)
}

// Unwrap returns the cause.
func (e *ProtocolError) Unwrap() error { return e.Err }

// span locates one attribute in Decoder.buf: name is buf[start:eq], value
// is buf[eq+1:end].
type span struct{ start, eq, end, line int }

// Decoder reads policy delegation requests from a stream, one at a time.
// It keeps its buffers between requests, so one Decoder should serve a
// whole connection. Not safe for concurrent use.
type Decoder struct {
	r     *bufio.Reader
	buf   []byte // current request: attribute lines without their line ends
	spans []span // attributes of the current request

	slowOnly bool // tests: never take decodeBuffered's path
}

// NewDecoder returns a Decoder reading from r. Lines may be longer than
// r's buffer; the caps are enforced before more input is copied.
func NewDecoder(r *bufio.Reader) *Decoder {
	return &Decoder{r: r, buf: make([]byte, 0, 1024), spans: make([]span, 0, 32)}
}

// maxReusedAttrs is the most attributes a Request's storage may have room
// for and still be reused by Decode: storage grown past it by a request
// with more attributes than Postfix sends (29 in 3.7, a few more in later
// versions) is dropped, so that one huge request does not pin it for the
// rest of its connection's life.
const maxReusedAttrs = 64

// Decode reads the next request into req. It returns io.EOF, unwrapped,
// when the stream ends cleanly between requests, a *ProtocolError for a
// malformed request (including a stream ending inside one), and read
// errors wrapped otherwise.
//
// Decode empties and refills req, reusing its storage (the attribute
// slice and its index) unless a previous request grew it past
// maxReusedAttrs attributes: decoding a request then allocates only the
// one string that holds all its names and values, and does no map work.
// A caller decoding into the same Request must be done with the previous
// request first; one that wants to keep a request uses a new Request each
// time, or copies it (Map). After an error, req may hold the previous
// request or part of the bad one.
//
// The names and values of one request share a single backing string (one
// allocation per request); strings are immutable, so they stay valid after
// req is reused. A caller keeping one value for long can strings.Clone it
// to let the rest go.
func (d *Decoder) Decode(req *Request) error {
	if !d.slowOnly && d.decodeBuffered(req) {
		return nil
	}
	err := d.decodeLines(req)
	d.trim()
	return err
}

// maxKeptBuf is the largest line buffer a Decoder keeps between requests.
const maxKeptBuf = 4 << 10

// trim drops the Decoder's buffers when a request larger than Postfix's
// has grown them: a 64 KiB request of short lines needs 700 KB of line
// positions, which a connection would otherwise hold for its whole life,
// and a client could make every connection hold.
func (d *Decoder) trim() {
	if cap(d.spans) > maxReusedAttrs {
		d.spans = nil
	}
	if cap(d.buf) > maxKeptBuf {
		d.buf = nil
	}
}

// decodeLines is Decode reading the request line by line.
func (d *Decoder) decodeLines(req *Request) error {
	d.buf = d.buf[:0]
	d.spans = d.spans[:0]
	total := 0 // bytes of this request consumed so far, line ends included
	for {
		lineStart := len(d.buf)
		lineNo := len(d.spans) + 1
		// Read one line, possibly in chunks when it is longer than the
		// bufio.Reader's buffer. Every chunk is checked against the caps
		// before it is copied.
		for {
			chunk, err := d.r.ReadSlice('\n')
			lineLen := len(d.buf) - lineStart + len(chunk)
			complete := err == nil
			content := lineLen
			if complete {
				content-- // '\n'
				if content > 0 && d.lastByte(lineStart, chunk, lineLen-2) == '\r' {
					content--
				}
			} else if len(chunk) > 0 && chunk[len(chunk)-1] == '\r' {
				content-- // may be the first half of "\r\n"
			}
			if content > MaxLineSize {
				return &ProtocolError{Line: lineNo, Err: ErrLineTooLong}
			}
			if total+len(chunk) > MaxRequestSize {
				return &ProtocolError{Line: lineNo, Err: ErrRequestTooLarge}
			}
			total += len(chunk)
			d.buf = append(d.buf, chunk...)
			if complete {
				d.buf = d.buf[:lineStart+content]
				break
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err == io.EOF {
				if total == 0 {
					return io.EOF
				}
				return &ProtocolError{Line: lineNo, Err: io.ErrUnexpectedEOF}
			}
			return fmt.Errorf("read policy request: %w", err)
		}
		line := d.buf[lineStart:]
		if len(line) == 0 {
			if len(d.spans) == 0 {
				return &ProtocolError{Line: lineNo, Err: ErrEmptyRequest}
			}
			break
		}
		eq := bytes.IndexByte(line, '=')
		switch {
		case eq < 0:
			return &ProtocolError{Line: lineNo, Err: ErrMissingEquals, Name: string(line)}
		case eq == 0:
			return &ProtocolError{Line: lineNo, Err: ErrEmptyName}
		}
		d.spans = append(d.spans, span{start: lineStart, eq: lineStart + eq, end: len(d.buf), line: lineNo})
	}

	// One string for the whole request; names and values are substrings.
	text := string(d.buf)
	if sp := d.fill(req, text); sp != nil {
		return &ProtocolError{Line: sp.line, Err: ErrDuplicateAttribute, Name: text[sp.start:sp.eq]}
	}
	return nil
}

// fill empties req and adds to it the attributes d.spans locates in text.
// It returns the span of the first name that repeats an earlier one, or
// nil.
func (d *Decoder) fill(req *Request, text string) *span {
	req.reset(len(d.spans))
	if len(d.spans) <= maxIndexedAttrs {
		// req.add finds a repeated name in req's index.
		for i := range d.spans {
			sp := &d.spans[i]
			if !req.add(text[sp.start:sp.eq], text[sp.eq+1:sp.end]) {
				return sp
			}
		}
		return nil
	}
	// More attributes than the index holds, which Postfix never sends: a
	// set finds repeated names (a linear scan per name would let a request
	// of tens of thousands of short lines cost quadratic time).
	seen := make(map[string]struct{}, len(d.spans))
	for i := range d.spans {
		sp := &d.spans[i]
		name := text[sp.start:sp.eq]
		if _, dup := seen[name]; dup {
			return sp
		}
		seen[name] = struct{}{}
		req.add(name, text[sp.eq+1:sp.end])
	}
	return nil
}

// decodeBuffered decodes the next request straight from the reader's
// buffer when all of it is there, as it is when Postfix, which writes each
// request at once, is the client and the server has checked (see
// session.Complete): one pass over the bytes, no line copied, and the
// request's one string made of the buffer. It reports false, consuming
// nothing, for anything else: a request not yet complete, one with more
// than maxIndexedAttrs attributes, and every malformed one. Decode then
// reads it line by line and says what is wrong, so that both paths accept
// the same requests and report the same errors (FuzzDecodePaths).
// bench/README.md has what it saved.
func (d *Decoder) decodeBuffered(req *Request) bool {
	n := d.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := d.r.Peek(n)
	d.spans = d.spans[:0]
	for pos, line := 0, 1; ; line++ {
		nl := bytes.IndexByte(b[pos:], '\n')
		if nl < 0 {
			return false // not all here yet
		}
		content := pos + nl
		if content > pos && b[content-1] == '\r' {
			content--
		}
		if content == pos {
			// The empty line: the end of the request.
			if len(d.spans) == 0 {
				return false
			}
			end := pos + nl + 1
			if end > MaxRequestSize {
				return false
			}
			if d.fill(req, string(b[:end])) != nil {
				return false // a repeated name
			}
			_, _ = d.r.Discard(end)
			return true
		}
		if content-pos > MaxLineSize || len(d.spans) == maxIndexedAttrs {
			return false
		}
		eq := bytes.IndexByte(b[pos:content], '=')
		if eq <= 0 {
			return false
		}
		d.spans = append(d.spans, span{start: pos, eq: pos + eq, end: content, line: line})
		pos += nl + 1
	}
}

// lastByte returns byte i of the line being assembled, which is split
// between d.buf[lineStart:] and chunk.
func (d *Decoder) lastByte(lineStart int, chunk []byte, i int) byte {
	if have := len(d.buf) - lineStart; i >= have {
		return chunk[i-have]
	}
	return d.buf[lineStart+i]
}

// ValidAction reports whether a can be sent as is: it is not empty and
// holds no line feed, carriage return or NUL. A line break would let the
// text end the reply early and add attributes of its own (attribute
// injection); Postfix reads a NUL as the end of the string.
func ValidAction(a Action) bool {
	// Three byte searches, not a rune-by-rune scan: the three are ASCII,
	// so they cannot be part of a longer UTF-8 sequence, and the reply of
	// a blocked request is 200-odd bytes checked once per request.
	s := string(a)
	return s != "" && strings.IndexByte(s, '\n') < 0 && strings.IndexByte(s, '\r') < 0 && strings.IndexByte(s, 0) < 0
}

// AppendAction appends the reply "action=<a>\n\n" to dst. It returns dst
// unchanged and ErrInvalidAction when a is not ValidAction: the caller
// must then fail closed rather than send it.
func AppendAction(dst []byte, a Action) ([]byte, error) {
	if !ValidAction(a) {
		return dst, fmt.Errorf("%w: %.80q", ErrInvalidAction, string(a))
	}
	dst = append(dst, "action="...)
	dst = append(dst, a...)
	return append(dst, "\n\n"...), nil
}

// AppendRequest appends req encoded as a request, attributes sorted by
// name, to dst: what a client such as Postfix sends. It fails when an
// attribute cannot be encoded so that Decode returns it unchanged: an
// empty name, a name holding "=" or a line feed, a value holding a line
// feed, or a request without attributes. A value ending in "\r" is sent
// with a "\r\n" line end, of which Decode strips only the line end.
func AppendRequest(dst []byte, req *Request) ([]byte, error) {
	if req.Len() == 0 {
		return dst, ErrEmptyRequest
	}
	for _, p := range req.pairs {
		switch {
		case p.name == "":
			return dst, ErrEmptyName
		case strings.ContainsAny(p.name, "=\n"):
			return dst, fmt.Errorf("attribute name %.64q: holds '=' or a line feed", p.name)
		case strings.Contains(p.value, "\n"):
			return dst, fmt.Errorf("attribute %.64q: value holds a line feed", p.name)
		}
	}
	pairs := slices.SortedFunc(slices.Values(req.pairs), func(a, b attr) int { return strings.Compare(a.name, b.name) })
	for _, p := range pairs {
		dst = append(dst, p.name...)
		dst = append(dst, '=')
		dst = append(dst, p.value...)
		if strings.HasSuffix(p.value, "\r") {
			dst = append(dst, '\r')
		}
		dst = append(dst, '\n')
	}
	return append(dst, '\n'), nil
}
