// Package snapshot handles a daemon state file (the probe cache, a source
// cache) found corrupt at start: the file is kept aside for inspection
// rather than silently overwritten by the next save, what still parses is
// salvaged, and the caller is told, so that it can raise an event, an
// alert and a metric (Corrupt.Reason words them).
package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// Corrupt describes a state file that could not be read whole.
type Corrupt struct {
	Path  string // the state file
	Aside string // where the original was kept (Quarantine); "" if that failed
	Err   error  // what was wrong with it
	// Salvaged and Lost count the records kept and dropped, when the
	// format can tell (Lost -1: unknown).
	Salvaged, Lost int
	// What names the file's contents for texts ("probe cache").
	What string
}

// Reason is one line for a log, an event and an alert.
func (c Corrupt) Reason() string {
	what := c.What
	if what == "" {
		what = "state file"
	}
	s := fmt.Sprintf("%s %s is corrupt (%v)", what, c.Path, c.Err)
	if c.Aside != "" {
		s += "; the original is kept as " + c.Aside
	} else {
		s += "; it could not be kept aside and will be overwritten"
	}
	s += fmt.Sprintf("; %d record(s) salvaged", c.Salvaged)
	switch {
	case c.Lost > 0:
		s += fmt.Sprintf(", %d lost", c.Lost)
	case c.Lost < 0:
		s += ", the rest lost"
	}
	return s
}

// Quarantine renames the corrupt file at path to path.corrupt-<unix time
// of now> (a suffix -1, -2, … if that exists) and returns the new name.
// The file stays in its directory, so no copy is made and the rename is
// atomic; the next save then writes a fresh file at path.
func Quarantine(path string, now time.Time) (string, error) {
	base := path + ".corrupt-" + strconv.FormatInt(now.Unix(), 10)
	aside := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			break
		}
		if i > 100 {
			return "", fmt.Errorf("keeping %s aside: %s and 100 more names exist", path, base)
		}
		aside = base + "-" + strconv.Itoa(i)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("keeping %s aside: %w", path, err)
	}
	return aside, nil
}

// SalvageArrays reads, from a JSON object that may be torn or damaged,
// the elements of its top-level arrays named in keys, in order, each as it
// was written, up to the first element (or token) that does not parse.
// Other members are skipped while they parse. It never fails: what it
// could not read is simply not returned.
func SalvageArrays(data []byte, keys ...string) map[string][]json.RawMessage {
	out := map[string][]json.RawMessage{}
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return out
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return out
		}
		key, _ := t.(string)
		if !want[key] {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return out
			}
			continue
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			return out
		}
		for dec.More() {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return out
			}
			out[key] = append(out[key], raw)
		}
		if _, err := dec.Token(); err != nil && err != io.EOF { // ']'
			return out
		}
	}
	return out
}
