package engine

// sanitizeMax is the longest text sanitize keeps.
const sanitizeMax = 128

// sanitize keeps text taken from a request safe to put in an SMTP reply
// and a log line: printable ASCII only, bounded length.
func sanitize(s string) string {
	if clean(s) {
		return s
	}
	return string(appendSanitized(make([]byte, 0, min(len(s), sanitizeMax)), s))
}

// clean reports whether sanitize would return s unchanged.
func clean(s string) bool {
	if len(s) > sanitizeMax {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// appendSanitized appends sanitize(s) to dst.
func appendSanitized(dst []byte, s string) []byte {
	for i := 0; i < len(s) && i < sanitizeMax; i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e {
			c = '?'
		}
		dst = append(dst, c)
	}
	return dst
}
