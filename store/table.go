package store

import (
	"time"
)

// Values of Defaults.Learn.
const (
	LearnOff     = "off"     // probe results are not used
	LearnReport  = "report"  // probe results are recorded, answers do not change
	LearnEnforce = "enforce" // unlisted domains with working STARTTLS answer encrypt
)

// DefaultLearnMaxAge is learn_max_age when the table does not set it.
const DefaultLearnMaxAge = 720 * time.Hour

// Defaults is the table's defaults section, with unset fields filled in.
type Defaults struct {
	Outbound       *Policy // answer for keys nothing else decides; nil = NOTFOUND
	OutboundSource Source  // where defaults.outbound was set (zero if not)
	Learn          string  // LearnOff, LearnReport or LearnEnforce
	LearnMaxAge    time.Duration
	InboundAction  string // ActionDefer or ActionReject, for rules that do not say
	// AllowEmpty lets an empty table replace a non-empty one on reload
	// (a truncated file is refused otherwise).
	AllowEmpty bool
}

// Entry is one entry of the outbound, recipients or senders section, or of
// an included Postfix tls_policy file. Entries are immutable.
type Entry struct {
	Key      string // normalized: lower-case, no trailing dot
	Policy   *Policy
	Testing  bool // answered as if absent; the prober reports what enforcing would do
	Note     string
	ReviewBy time.Time // zero if not set; Lint warns once it has passed
	Source   Source
}

// Table is a parsed and validated policy table.
type Table struct {
	Defaults   Defaults
	Outbound   []*Entry // YAML outbound entries and included Postfix entries
	Recipients []*Entry
	Senders    []*Entry
	Inbound    []*InboundRule
	// Files is every file read, includes too: absolute paths, sorted.
	Files []string
	// Dirs is the directories to watch for changes: the table directory
	// (or the table file's directory) and every include's directory;
	// absolute, sorted, without duplicates.
	Dirs []string

	// root is the path the table was loaded from (LoadTable, ParseFile).
	root string

	// keys is the index of the entry lists' keys the parser built to find
	// duplicates, for Build to reuse (see listKeys).
	keys *listKeys
}

// Empty reports whether the table changes no answer: no entry, no
// inbound rule, no defaults.outbound and no learn: enforce (what an empty
// or truncated file gives).
func (t *Table) Empty() bool {
	return len(t.Outbound) == 0 && len(t.Recipients) == 0 && len(t.Senders) == 0 && len(t.Inbound) == 0 &&
		t.Defaults.Outbound == nil && t.Defaults.Learn != LearnEnforce
}
