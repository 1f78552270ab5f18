package maillog

import (
	"strconv"
	"strings"
	"time"
)

// Line is one log record: when, which program and process, and the text.
type Line struct {
	Time    time.Time
	Program string // e.g. "postfix/smtp", "postfix-out/smtp"
	PID     int
	Msg     string
}

// ParseSyslog parses a syslog-style line in any of the formats a Postfix
// log file has: Postfix's maillog_file ("Dec 07 17:28:35 host prog[pid]:
// msg"), traditional syslog ("Dec  7 …") and RFC 3339 ("2026-12-07T17:28:35
// .123456+00:00 host prog[pid]: msg"). Stamps without a year take the year
// of now (the previous one if that would put them more than a day ahead);
// loc is their time zone. ok is false for anything else.
func ParseSyslog(s string, now time.Time, loc *time.Location) (l Line, ok bool) {
	s = strings.TrimRight(s, "\r\n")
	var rest string
	if len(s) > 10 && s[4] == '-' && s[7] == '-' && s[10] == 'T' {
		i := strings.IndexByte(s, ' ')
		if i < 0 {
			return l, false
		}
		t, err := time.Parse(time.RFC3339Nano, s[:i])
		if err != nil {
			return l, false
		}
		l.Time, rest = t, s[i+1:]
	} else {
		if len(s) < 16 || s[3] != ' ' || s[6] != ' ' || s[15] != ' ' {
			return l, false
		}
		stamp := s[:15]
		if stamp[4] == ' ' { // "Dec  7": traditional space padding
			stamp = stamp[:4] + "0" + stamp[5:]
		}
		t, err := time.ParseInLocation("Jan 02 15:04:05", stamp, loc)
		if err != nil {
			return l, false
		}
		now = now.In(loc)
		t = t.AddDate(now.Year(), 0, 0)
		if t.After(now.Add(24 * time.Hour)) {
			t = t.AddDate(-1, 0, 0)
		}
		l.Time, rest = t, s[16:]
	}
	// host
	i := strings.IndexByte(rest, ' ')
	if i < 0 {
		return l, false
	}
	rest = rest[i+1:]
	// prog[pid]: msg
	i = strings.Index(rest, ": ")
	if i < 0 {
		return l, false
	}
	tag, msg := rest[:i], rest[i+2:]
	j := strings.IndexByte(tag, '[')
	if j <= 0 || !strings.HasSuffix(tag, "]") {
		return l, false
	}
	pid, err := strconv.Atoi(tag[j+1 : len(tag)-1])
	if err != nil || pid <= 0 {
		return l, false
	}
	l.Program, l.PID, l.Msg = tag[:j], pid, msg
	return l, true
}

// Service returns the last component of Program: "smtp" for
// "postfix/smtp", "postfix-out/smtp" or "postfix/relay/smtp".
func (l Line) Service() string {
	if i := strings.LastIndexByte(l.Program, '/'); i >= 0 {
		return l.Program[i+1:]
	}
	return l.Program
}
