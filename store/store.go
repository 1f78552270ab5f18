package store

import (
	"errors"
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

// Store is an immutable, fully built policy table: the go-memdb database
// (the store's schema, read through the typed methods below) plus the
// lookup maps resolution uses on the hot path. Build it with Build or
// Load; it is never modified afterwards, so any number of goroutines may
// use it, and a reload replaces the whole Store.
type Store struct {
	db    *memdb.MemDB
	table *Table
	idx   *index
}

// Build builds a Store from a parsed table. It re-checks what Resolve
// relies on (no nil policies, normalized keys, no duplicate keys or rule
// names), so a Table assembled by hand cannot make lookups misbehave.
func Build(t *Table) (*Store, error) {
	if t == nil {
		return nil, errors.New("store: nil table")
	}
	idx, err := newIndex(t)
	if err != nil {
		return nil, err
	}
	db, err := memdb.NewMemDB(dbSchema())
	if err != nil {
		return nil, fmt.Errorf("store: memdb schema: %w", err)
	}
	txn := db.Txn(true)
	defer txn.Abort()
	for _, tb := range []struct {
		name    string
		entries []*Entry
	}{{tableOutbound, t.Outbound}, {tableRecipients, t.Recipients}, {tableSenders, t.Senders}} {
		for _, e := range tb.entries {
			if err := txn.Insert(tb.name, e); err != nil {
				return nil, fmt.Errorf("store: insert %s %q: %w", tb.name, e.Key, err)
			}
		}
	}
	for _, r := range t.Inbound {
		if err := txn.Insert(tableInbound, r); err != nil {
			return nil, fmt.Errorf("store: insert inbound rule %q: %w", r.Name, err)
		}
	}
	txn.Commit()
	return &Store{db: db, table: t, idx: idx}, nil
}

// Load loads the table at path (LoadTable) and builds a Store from it. The
// error, if the table is invalid, is an ErrorList.
func Load(path string) (*Store, error) {
	t, err := LoadTable(path)
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
// first), or nil, nil if there is none. Testing entries are returned too.
func (s *Store) OutboundByKey(key string) (*Entry, error) {
	return s.entryByKey(tableOutbound, key)
}

// RecipientByKey returns the recipients entry with the given key
// (normalized first), or nil, nil.
func (s *Store) RecipientByKey(key string) (*Entry, error) {
	return s.entryByKey(tableRecipients, key)
}

// SenderByKey returns the senders entry with the given key (normalized
// first), or nil, nil.
func (s *Store) SenderByKey(key string) (*Entry, error) {
	return s.entryByKey(tableSenders, key)
}

func (s *Store) entryByKey(table, key string) (*Entry, error) {
	key = NormalizeKey(key)
	if key == "" {
		return nil, nil
	}
	raw, err := s.db.Txn(false).First(table, indexID, key)
	if err != nil {
		return nil, fmt.Errorf("store: %s lookup: %w", table, err)
	}
	if raw == nil {
		return nil, nil
	}
	return raw.(*Entry), nil
}

// InboundRuleByName returns the inbound rule called name, or nil, nil.
func (s *Store) InboundRuleByName(name string) (*InboundRule, error) {
	if name == "" {
		return nil, nil
	}
	raw, err := s.db.Txn(false).First(tableInbound, indexID, name)
	if err != nil {
		return nil, fmt.Errorf("store: inbound lookup: %w", err)
	}
	if raw == nil {
		return nil, nil
	}
	return raw.(*InboundRule), nil
}

// TestingEntries returns the outbound, recipients and senders entries in
// testing mode, which the prober checks. Order: outbound, recipients,
// senders, each by key.
func (s *Store) TestingEntries() ([]*Entry, error) {
	txn := s.db.Txn(false)
	var out []*Entry
	for _, table := range []string{tableOutbound, tableRecipients, tableSenders} {
		it, err := txn.Get(table, indexTesting, true)
		if err != nil {
			return nil, fmt.Errorf("store: %s testing lookup: %w", table, err)
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			out = append(out, raw.(*Entry))
		}
	}
	return out, nil
}
