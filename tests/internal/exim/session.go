package exim

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Reply is one SMTP reply: its code and its text lines without the code.
type Reply struct {
	Code int
	// Lines are the text of each line after "NNN-" / "NNN ".
	Lines []string
}

// enhancedCode matches an RFC 3463 enhanced status code and its space.
var enhancedCode = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3} `)

// Text is the reply's text as one line: Exim wraps long replies and repeats
// the enhanced status code on every line; the repetitions are dropped and
// the lines joined with spaces.
func (r Reply) Text() string {
	if len(r.Lines) == 0 {
		return ""
	}
	code := enhancedCode.FindString(r.Lines[0])
	parts := []string{r.Lines[0]}
	for _, l := range r.Lines[1:] {
		if code != "" {
			l = strings.TrimPrefix(l, code)
		}
		parts = append(parts, l)
	}
	return strings.Join(parts, " ")
}

// String formats r as the first line would appear on the wire, with the rest
// of the text joined.
func (r Reply) String() string { return strconv.Itoa(r.Code) + " " + r.Text() }

// Session is the transcript of an exim -bh session.
type Session struct {
	// Replies are the server's replies in order: the greeting first.
	Replies []Reply
	// Log holds the lines Exim would have logged ("LOG: " stripped).
	Log []string
	// Raw is the whole output, for failure messages.
	Raw string
}

// HostCheck runs an exim -bh session "from" client (an IP address), to the
// server address 127.0.0.1 port 25, with the SMTP lines given (CRLF is
// added; use "\r" inside a line for a bare CR). extra are more command-line
// options, e.g. "-oMs", "name" for a verified client host name.
func (x *Instance) HostCheck(ctx context.Context, defines map[string]string, client string, lines []string, extra ...string) (*Session, error) {
	var in strings.Builder
	for _, l := range lines {
		in.WriteString(l + "\r\n")
	}
	args := append([]string{"-bh", client + ".40000", "-oMi", "127.0.0.1.25"}, extra...)
	res, err := x.Run(ctx, defines, in.String(), args...)
	if err != nil {
		return nil, err
	}
	s := &Session{Raw: res.String()}
	s.Replies = ParseReplies(res.Stdout)
	for _, l := range strings.Split(res.Stderr, "\n") {
		if msg, ok := strings.CutPrefix(l, "LOG: "); ok {
			s.Log = append(s.Log, msg)
		}
	}
	if len(s.Replies) == 0 || s.Replies[0].Code != 220 {
		return s, fmt.Errorf("exim -bh %s: no greeting: %s", client, res)
	}
	return s, nil
}

// ParseReplies extracts the SMTP replies from exim -bh output: lines
// "NNN-text" continue a reply, "NNN text" (or a bare "NNN") ends it; other
// lines (Exim's "**** SMTP testing" notes, blank lines) are skipped.
func ParseReplies(out string) []Reply {
	var replies []Reply
	var cur *Reply
	for _, l := range strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n") {
		if len(l) < 3 {
			continue
		}
		code, err := strconv.Atoi(l[:3])
		if err != nil || code < 200 || code > 599 || (len(l) > 3 && l[3] != ' ' && l[3] != '-') {
			continue
		}
		if cur == nil || cur.Code != code {
			replies = append(replies, Reply{Code: code})
			cur = &replies[len(replies)-1]
		}
		text := ""
		if len(l) > 4 {
			text = l[4:]
		}
		cur.Lines = append(cur.Lines, text)
		if len(l) == 3 || l[3] == ' ' {
			cur = nil
		}
	}
	return replies
}
