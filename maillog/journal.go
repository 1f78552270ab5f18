package maillog

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"
)

// journalEntry is the part of a `journalctl -o json` record used here.
// MESSAGE is a string, or an array of bytes when it is not valid UTF-8.
type journalEntry struct {
	Cursor     string          `json:"__CURSOR"`
	Realtime   string          `json:"__REALTIME_TIMESTAMP"`
	Identifier string          `json:"SYSLOG_IDENTIFIER"`
	SyslogPID  string          `json:"SYSLOG_PID"`
	PID        string          `json:"_PID"`
	Message    json.RawMessage `json:"MESSAGE"`
}

// ParseJournal parses one line of `journalctl -o json` output. It returns
// the record's cursor even when the record is not a Postfix line (ok false
// then), so that a follower can remember its position past it.
func ParseJournal(b []byte) (l Line, cursor string, ok bool, err error) {
	var e journalEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return l, "", false, err
	}
	if e.Cursor == "" {
		return l, "", false, errors.New("journal record without __CURSOR")
	}
	us, err := strconv.ParseInt(e.Realtime, 10, 64)
	if err != nil {
		return l, e.Cursor, false, nil
	}
	l.Time = time.UnixMicro(us)
	l.Program = e.Identifier
	pid := e.SyslogPID
	if pid == "" {
		pid = e.PID
	}
	if l.PID, err = strconv.Atoi(pid); err != nil || l.PID <= 0 || l.Program == "" {
		return l, e.Cursor, false, nil
	}
	var s string
	if json.Unmarshal(e.Message, &s) != nil {
		var raw []byte
		var nums []int
		if json.Unmarshal(e.Message, &nums) != nil {
			return l, e.Cursor, false, nil
		}
		for _, n := range nums {
			raw = append(raw, byte(n))
		}
		s = string(raw)
	}
	l.Msg = s
	return l, e.Cursor, true, nil
}
