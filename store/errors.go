package store

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Source is where a table element was written: a file and a 1-based line.
// Line 0 means the file as a whole.
type Source struct {
	File string
	Line int
}

// String returns "file:line", or just "file" when the line is unknown.
func (s Source) String() string {
	if s.Line <= 0 {
		return s.File
	}
	return s.File + ":" + strconv.Itoa(s.Line)
}

// Error is one problem found in a policy table, with the place it was found.
type Error struct {
	Source
	Msg string
}

// Error returns "file:line: msg".
func (e *Error) Error() string { return e.Source.String() + ": " + e.Msg }

// ErrorList is every problem found in a table. LoadTable and ParseFile
// return it (sorted by file, then line) so that all mistakes are reported
// at once, not one per reload.
type ErrorList []*Error

// Error returns all errors, one per line.
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// sort orders the list by file, then line; errors at the same place keep
// the order in which they were found.
func (l ErrorList) sort() {
	slices.SortStableFunc(l, func(a, b *Error) int {
		if c := cmp.Compare(a.File, b.File); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
}

// LoadError is what a table that failed to load returns: every problem
// found, and the files and directories the load read or tried to read
// (an include that does not exist yet among them). A reloader watches
// those, so that fixing the table — creating the missing include, say —
// reloads it without SIGHUP. errors.As(err, &list) with an ErrorList list
// gets the problems.
type LoadError struct {
	Errors ErrorList
	// Files and Dirs are as Table.Files and Table.Dirs: absolute, sorted.
	Files, Dirs []string
}

// Error returns all errors, one per line, as ErrorList.Error.
func (e *LoadError) Error() string { return e.Errors.Error() }

// Unwrap returns the ErrorList.
func (e *LoadError) Unwrap() error { return e.Errors }

// err returns l as an error, or nil when l is empty (a nil ErrorList
// stored in an error interface would not compare equal to nil).
func (l ErrorList) err() error {
	if len(l) == 0 {
		return nil
	}
	l.sort()
	return l
}

// Quoted input is cut to maxQuoted bytes (a SHA-256 fingerprint, 95,
// stays whole): a 5 MB line must not come back whole in an error.
// Strings printed with %s or %v are cut only past maxPlain, so the fixed
// texts that messages pass that way stay whole.
const (
	maxQuoted = 100
	maxPlain  = 160
)

// clip returns s cut to at most n bytes (on a rune boundary) and "…".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// clipArgs returns args with the long strings cut for format: to
// maxQuoted for a %q verb, to maxQuoted too when past maxPlain for others.
func clipArgs(format string, args []any) []any {
	out := args
	arg := 0
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		i++
		for i < len(format) && strings.IndexByte("+-# 0123456789.", format[i]) >= 0 {
			i++
		}
		if i >= len(format) || format[i] == '%' {
			continue
		}
		if arg < len(args) {
			if s, ok := args[arg].(string); ok && (len(s) > maxPlain || format[i] == 'q' && len(s) > maxQuoted) {
				if &out[0] == &args[0] {
					out = slices.Clone(args)
				}
				out[arg] = clip(s, maxQuoted)
			}
		}
		arg++
	}
	return out
}

// errorf is fmt.Errorf with the long strings of args cut (clipArgs).
func errorf(format string, args ...any) error {
	return fmt.Errorf(format, clipArgs(format, args)...)
}
