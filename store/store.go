package store

import (
	"context"
	"errors"
	"runtime"
)

// Store is an immutable, fully built policy table with the key indexes
// resolution uses, which also serve OutboundByKey. Build it with Build or Load; its contents never change
// afterwards, so any number of goroutines may use it, and a reload
// replaces the whole Store.
type Store struct {
	table *Table
	idx   *index
}

// PolicyUse is one distinct policy of a table's outbound, recipients and
// senders entries, and the number of entries that use it.
type PolicyUse struct {
	Policy  *Policy
	Entries int
}

// Build builds a Store from a parsed table. It re-checks what Resolve
// relies on (no nil policies, normalized keys, no duplicate keys or rule
// names), so a Table assembled by hand cannot make lookups misbehave.
func Build(t *Table) (*Store, error) {
	if t == nil {
		return nil, errors.New("store: nil table")
	}
	idx, _, err := newIndex(t)
	if err != nil {
		return nil, err
	}
	return &Store{table: t, idx: idx}, nil
}

// Load loads the table at path (LoadTable) and builds a Store from it. The
// error, if the table is invalid, is a *LoadError (see LoadTable).
func Load(path string) (*Store, error) {
	return LoadContext(context.Background(), path)
}

// LoadContext is Load, abandoned when ctx is done: it then returns ctx's
// error once the files being parsed are (a file's YAML is decoded in one
// piece). A reload uses it to drop a load
// that a newer change has made useless.
func LoadContext(ctx context.Context, path string) (*Store, error) {
	t, err := loadTable(ctx, path, runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, err
	}
	return Build(t)
}

// Table returns the table the Store was built from. It must not be modified.
func (s *Store) Table() *Table { return s.table }

// InboundRules returns the inbound rules in table order. The slice must
// not be modified.
func (s *Store) InboundRules() []*InboundRule { return s.table.Inbound }

// OutboundByKey returns the outbound entry with the given key (normalized
// first), or nil if there is none. Testing entries are returned too.
func (s *Store) OutboundByKey(key string) *Entry {
	return s.idx.out.get(NormalizeKey(key))
}
