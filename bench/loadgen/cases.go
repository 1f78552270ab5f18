package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// testCase is one line of a -cases file (JSON lines).
type testCase struct {
	// Key is the socketmap key or redis key; for policy requests without
	// Req it is the sender domain filled into a built-in request.
	Key string `json:"key"`
	// Req is a complete policy delegation request (name=value lines,
	// without the final empty line).
	Req string `json:"req,omitempty"`
	// Want is the exact reply: the socketmap payload ("OK encrypt",
	// "NOTFOUND "), the redis value ("(nil)" for a missing key), or the
	// policy reply without the final newlines ("action=DUNNO").
	Want string `json:"want,omitempty"`
	// Prefix and Contains check the reply when Want is empty.
	Prefix   string `json:"prefix,omitempty"`
	Contains string `json:"contains,omitempty"`
	// Next is the exact reply after a reload (socketmap and redis): the
	// reply may then be Want or Next, never Want again once Next was seen.
	Next string `json:"next,omitempty"`

	wire []byte // the request as sent
}

// check compares reply with what tc expects; t0 and t1 are the send and
// receive times, recorded for the reload check.
func (s *stats) check(tc *testCase, reply string, t0, t1 time.Time) error {
	switch {
	case tc.Next != "" && reply == tc.Next:
		if s.firstNew.IsZero() {
			s.firstNew = t1
		}
		s.new++
		return nil
	case tc.Next != "" && reply == tc.Want:
		if !s.firstNew.IsZero() {
			s.wrong++
			return fmt.Errorf("old reply %q for %q after this connection saw the new table", reply, tc.Key)
		}
		s.oldSent = append(s.oldSent, t0)
		s.old++
		return nil
	case tc.Want != "":
		if reply != tc.Want {
			s.wrong++
			if tc.Next != "" {
				return fmt.Errorf("reply %q for %q, want %q (old) or %q (new)", reply, tc.Key, tc.Want, tc.Next)
			}
			return fmt.Errorf("reply %q for %q, want %q", reply, tc.Key, tc.Want)
		}
	}
	if tc.Prefix != "" && !strings.HasPrefix(reply, tc.Prefix) {
		s.wrong++
		return fmt.Errorf("unexpected reply %q for %q, want prefix %q", reply, tc.Key, tc.Prefix)
	}
	if tc.Contains != "" && !strings.Contains(reply, tc.Contains) {
		s.wrong++
		return fmt.Errorf("unexpected reply %q for %q, want it to contain %q", reply, tc.Key, tc.Contains)
	}
	return nil
}

func readKeys(name string) ([]*testCase, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var cs []*testCase
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			cs = append(cs, &testCase{Key: l})
		}
	}
	return cs, nil
}

func readCases(name string) ([]*testCase, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var cs []*testCase
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		c := new(testCase)
		if err := json.Unmarshal(sc.Bytes(), c); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		cs = append(cs, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return cs, nil
}
