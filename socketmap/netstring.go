package socketmap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Size limits of the protocol.
const (
	// DefaultMaxRequestSize is the default cap on a request netstring's
	// payload ("<map> <key>"). Postfix keys are host names, bracketed
	// next-hops or addresses: far below this. The cap is checked against
	// the announced length, before anything is read or allocated.
	DefaultMaxRequestSize = 10 << 10

	// MaxReplySize is the largest reply payload Postfix accepts
	// (DICT_SOCKMAP_DEF_MAX_REPLY in dict_sockmap.c). A longer OK reply
	// would make Postfix fail the lookup, so AppendReply turns it into TEMP.
	MaxReplySize = 100000

	// maxReasonLen is how much of an error reason Postfix logs
	// ("%.200s" in dict_sockmap.c); longer reasons are truncated.
	maxReasonLen = 200

	// maxDecoderLen bounds a Decoder's cap, so that the length check in
	// parseHeader can never overflow an int.
	maxDecoderLen = 1 << 30
)

// ErrMalformed is matched (with errors.Is) by every *ProtocolError.
var ErrMalformed = errors.New("socketmap: malformed netstring or request")

// ProtocolError reports a malformed netstring, request or reply. After a
// netstring error (from Decoder.Next) the stream cannot be resynchronised
// and must be closed.
type ProtocolError struct {
	// Reason says what was wrong, e.g. "leading zero in netstring length".
	Reason string
	// Err is an underlying cause such as io.ErrUnexpectedEOF, or nil.
	Err error
}

// Error implements error.
func (e *ProtocolError) Error() string {
	if e.Err != nil {
		return "socketmap: protocol error: " + e.Reason + ": " + e.Err.Error()
	}
	return "socketmap: protocol error: " + e.Reason
}

// Unwrap returns the underlying cause, if any.
func (e *ProtocolError) Unwrap() error { return e.Err }

// Is reports whether target is ErrMalformed.
func (e *ProtocolError) Is(target error) bool { return target == ErrMalformed }

// Decoder reads netstrings (<len>:<bytes>,) from a buffered reader and
// rejects anything that is not strictly well-formed: a length that is empty,
// has a non-digit or a leading zero ("0" itself is fine), exceeds the cap,
// or is not followed by ':'; a payload not followed by ','; or EOF inside a
// netstring. The announced length is compared with the cap digit by digit,
// so an oversize or overflowing length is refused before any payload byte
// is read and before anything is allocated.
//
// A Decoder does not resynchronise after an error: the caller closes the
// stream.
type Decoder struct {
	r   *bufio.Reader
	max int
	buf []byte // payloads that do not fit in r's buffer; reused
}

// NewDecoder returns a Decoder reading from r that accepts payloads of at
// most maxLen bytes (DefaultMaxRequestSize if maxLen <= 0; at most 1 GiB).
func NewDecoder(r *bufio.Reader, maxLen int) *Decoder {
	if maxLen <= 0 {
		maxLen = DefaultMaxRequestSize
	}
	maxLen = min(maxLen, maxDecoderLen)
	return &Decoder{r: r, max: maxLen}
}

// Next returns the payload of the next netstring. The slice aliases the
// Decoder's or the reader's buffer: it is valid only until the next call to
// Next or any other read from the underlying reader.
//
// Next returns io.EOF only when the stream ends cleanly between two
// netstrings; a stream ending inside a netstring gives a *ProtocolError
// wrapping io.ErrUnexpectedEOF. Other read errors (deadlines, resets) are
// returned wrapped, and are not ErrMalformed.
func (d *Decoder) Next() ([]byte, error) {
	// Fast path: the whole netstring is already buffered, which is the
	// normal case for a client that writes each request in one write.
	// Parse it in place and hand out a slice of the reader's buffer.
	if n := d.r.Buffered(); n > 0 {
		buf, _ := d.r.Peek(n)
		plen, hlen, err := parseHeader(buf, d.max)
		if err != nil {
			return nil, err
		}
		if hlen > 0 && hlen+plen < len(buf) {
			if buf[hlen+plen] != ',' {
				return nil, &ProtocolError{Reason: "missing ',' after netstring payload"}
			}
			payload := buf[hlen : hlen+plen : hlen+plen]
			// Discarding what is buffered reads nothing from the
			// underlying reader, so payload stays intact.
			_, _ = d.r.Discard(hlen + plen + 1)
			return payload, nil
		}
	}
	return d.slow()
}

// Buffered reports whether a complete netstring, or bytes already known to
// be malformed, are buffered: if so, Next will not block.
func (d *Decoder) Buffered() bool {
	n := d.r.Buffered()
	if n == 0 {
		return false
	}
	buf, _ := d.r.Peek(n)
	plen, hlen, err := parseHeader(buf, d.max)
	return err != nil || (hlen > 0 && hlen+plen < len(buf))
}

// parseHeader parses the "<digits>:" prefix of buf. It returns the payload
// length and the header length (digits plus ':'); hlen == 0 with a nil error
// means buf holds a valid but incomplete header.
func parseHeader(buf []byte, maxLen int) (plen, hlen int, err error) {
	for i, c := range buf {
		switch {
		case c >= '0' && c <= '9':
			if i == 1 && buf[0] == '0' {
				return 0, 0, &ProtocolError{Reason: "leading zero in netstring length"}
			}
			plen = plen*10 + int(c-'0')
			// maxLen <= maxDecoderLen, far below MaxInt/10, so
			// this check also rules out overflow.
			if plen > maxLen {
				return 0, 0, &ProtocolError{Reason: "netstring length exceeds " + strconv.Itoa(maxLen)}
			}
		case c == ':' && i > 0:
			return plen, i + 1, nil
		case c == ':':
			return 0, 0, &ProtocolError{Reason: "empty netstring length"}
		case i == 0:
			return 0, 0, &ProtocolError{Reason: fmt.Sprintf("non-digit %q in netstring length", c)}
		default:
			return 0, 0, &ProtocolError{Reason: fmt.Sprintf("missing ':' after netstring length (got %q)", c)}
		}
	}
	return 0, 0, nil
}

// slow reads a netstring that is not completely buffered yet, blocking on
// the underlying reader as needed.
func (d *Decoder) slow() ([]byte, error) {
	// The header is at most len(strconv.Itoa(max))+1 bytes; read it one
	// byte at a time so that nothing past it is consumed before the
	// length has been checked.
	var hdr [24]byte
	h := hdr[:0]
	for {
		c, err := d.r.ReadByte()
		if err != nil {
			return nil, d.readErr(err, len(h) == 0)
		}
		h = append(h, c)
		plen, hlen, err := parseHeader(h, d.max)
		if err != nil {
			return nil, err
		}
		if hlen == 0 {
			continue
		}
		return d.payload(plen)
	}
}

// payload reads plen bytes and the trailing ','.
func (d *Decoder) payload(plen int) ([]byte, error) {
	if plen+1 <= d.r.Size() {
		// Fits in the reader's buffer: no copy.
		p, err := d.r.Peek(plen + 1)
		if err != nil {
			return nil, d.readErr(err, false)
		}
		if p[plen] != ',' {
			return nil, &ProtocolError{Reason: "missing ',' after netstring payload"}
		}
		_, _ = d.r.Discard(plen + 1)
		return p[:plen:plen], nil
	}
	// Larger than the reader's buffer but within the cap: read into a
	// buffer kept for the next one.
	if cap(d.buf) < plen+1 {
		d.buf = make([]byte, plen+1)
	}
	p := d.buf[:plen+1]
	if _, err := io.ReadFull(d.r, p); err != nil {
		return nil, d.readErr(err, false)
	}
	if p[plen] != ',' {
		return nil, &ProtocolError{Reason: "missing ',' after netstring payload"}
	}
	return p[:plen:plen], nil
}

// readErr classifies a read error: EOF before the first byte of a
// netstring is a clean end of stream; EOF later is a truncated netstring.
func (d *Decoder) readErr(err error, atStart bool) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		if atStart && errors.Is(err, io.EOF) {
			return io.EOF
		}
		return &ProtocolError{Reason: "truncated netstring", Err: io.ErrUnexpectedEOF}
	}
	return fmt.Errorf("socketmap: read netstring: %w", err)
}

// AppendNetstring appends s encoded as a netstring to dst.
func AppendNetstring(dst []byte, s string) []byte {
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, ':')
	dst = append(dst, s...)
	return append(dst, ',')
}

// splitRequest splits a request payload "<map> <key>" at its first space,
// without copying. The map name must be non-empty; the key may be empty
// (the null sender arrives as "map " with an empty key) and may contain
// spaces.
func splitRequest(b []byte) (name, key []byte, err error) {
	i := bytes.IndexByte(b, ' ')
	switch {
	case i < 0:
		return nil, nil, &ProtocolError{Reason: "request without space between map name and key"}
	case i == 0:
		return nil, nil, &ProtocolError{Reason: "empty map name"}
	}
	return b[:i], b[i+1:], nil
}

// AppendReply appends r encoded as a reply netstring to dst: "OK <data>",
// "NOTFOUND ", "TEMP <reason>", "TIMEOUT <reason>" or "PERM <reason>".
//
// The encoding fails closed where Postfix would misread the reply: an OK
// with empty data (Postfix rejects it: "empty string result is not
// allowed") or with a payload over MaxReplySize (Postfix fails the lookup)
// becomes TEMP; an unknown Status is sent as TEMP. Error reasons are cut to
// the 200 bytes Postfix logs, with control bytes replaced by '?'.
func AppendReply(dst []byte, r Reply) []byte {
	r = normalize(r)
	switch r.Status {
	case StatusOK:
		return appendReplyPayload(dst, "OK", r.Data)
	case StatusNotFound:
		return append(dst, "9:NOTFOUND ,"...)
	}
	return appendReason(dst, r.Status.String(), r.Data)
}

// normalize returns the reply AppendReply actually sends for r (before
// truncating reasons).
func normalize(r Reply) Reply {
	switch r.Status {
	case StatusOK:
		switch {
		case r.Data == "":
			return Reply{Status: StatusTemp, Data: "empty result"}
		case len("OK ")+len(r.Data) > MaxReplySize:
			return Reply{Status: StatusTemp, Data: "reply too long"}
		}
	case StatusNotFound:
		return Reply{Status: StatusNotFound}
	case StatusTemp, StatusTimeout, StatusPerm:
	default:
		return Reply{Status: StatusTemp, Data: r.Data}
	}
	return r
}

// appendReplyPayload appends the netstring "<word> <data>"; data is sent
// verbatim.
func appendReplyPayload(dst []byte, word, data string) []byte {
	dst = strconv.AppendInt(dst, int64(len(word)+1+len(data)), 10)
	dst = append(dst, ':')
	dst = append(dst, word...)
	dst = append(dst, ' ')
	dst = append(dst, data...)
	return append(dst, ',')
}

// appendReason appends "<word> <reason>" with the reason truncated and
// made printable.
func appendReason(dst []byte, word, reason string) []byte {
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	dst = strconv.AppendInt(dst, int64(len(word)+1+len(reason)), 10)
	dst = append(dst, ':')
	dst = append(dst, word...)
	dst = append(dst, ' ')
	for i := 0; i < len(reason); i++ {
		c := reason[i]
		if c < ' ' || c == 0x7f {
			c = '?'
		}
		dst = append(dst, c)
	}
	return append(dst, ',')
}
