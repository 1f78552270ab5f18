package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	memdb "github.com/hashicorp/go-memdb"
)

// Store is an immutable, fully built policy table: the key indexes
// resolution uses on the hot path (which also serve OutboundByKey,
// RecipientByKey and SenderByKey), and a go-memdb database of the table's
// small parts — files, distinct policies, inbound rules, testing entries
// (schema.go), built when first read. Build it with Build or Load; its
// contents never change afterwards, so any number of goroutines may use
// it, and a reload replaces the whole Store.
type Store struct {
	table *Table
	idx   *index
	uses  []PolicyUse

	// The go-memdb database is built on first use: nothing on the lookup
	// path reads it, and building it would delay every reload.
	dbOnce sync.Once
	db     *memdb.MemDB
	dbErr  error
}

// FileInfo is one file of a table (Table.Files) and how many entries and
// rules it defines.
type FileInfo struct {
	Path       string // absolute
	Outbound   int    // outbound entries, YAML and Postfix
	Recipients int
	Senders    int
	Inbound    int // inbound rules
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
	idx, uses, err := newIndex(t)
	if err != nil {
		return nil, err
	}
	return &Store{table: t, idx: idx, uses: uses}, nil
}

// memdb returns the Store's go-memdb database, building it on first use.
func (s *Store) memdb() (*memdb.MemDB, error) {
	s.dbOnce.Do(func() { s.db, s.dbErr = buildDB(s.table, s.uses) })
	return s.db, s.dbErr
}

// buildDB builds the go-memdb database of a table whose index was built.
func buildDB(t *Table, uses []PolicyUse) (*memdb.MemDB, error) {
	db, err := memdb.NewMemDB(dbSchema())
	if err != nil {
		return nil, fmt.Errorf("store: memdb schema: %w", err)
	}
	txn := db.Txn(true)
	defer txn.Abort()
	for _, f := range fileInfos(t) {
		if err := txn.Insert(tableFiles, f); err != nil {
			return nil, fmt.Errorf("store: insert file %q: %w", f.Path, err)
		}
	}
	// One row per policy text: entries parsed from different files (or
	// built by hand) may hold different *Policy values of the same text.
	rows := map[string]*policyRow{}
	for _, u := range uses {
		if r := rows[u.Policy.Text]; r != nil {
			r.Use.Entries += u.Entries
			continue
		}
		rows[u.Policy.Text] = &policyRow{Text: u.Policy.Text, Level: u.Policy.Level, Use: u}
	}
	for _, r := range rows {
		if err := txn.Insert(tablePolicies, r); err != nil {
			return nil, fmt.Errorf("store: insert policy %q: %w", r.Text, err)
		}
	}
	for _, r := range t.Inbound {
		if err := txn.Insert(tableInbound, r); err != nil {
			return nil, fmt.Errorf("store: insert inbound rule %q: %w", r.Name, err)
		}
	}
	for i, entries := range [...][]*Entry{sectionOutbound: t.Outbound, sectionRecipients: t.Recipients, sectionSenders: t.Senders} {
		sec := uint8(i)
		for _, e := range entries {
			if !e.Testing {
				continue
			}
			if err := txn.Insert(tableTesting, &testingRow{Section: sec, Key: e.Key, Entry: e}); err != nil {
				return nil, fmt.Errorf("store: insert testing entry %q: %w", e.Key, err)
			}
		}
	}
	txn.Commit()
	return db, nil
}

// fileInfos counts what each file of t defines. Entries of one file are
// adjacent and share their Source.File string, so the count costs one
// string comparison per entry.
func fileInfos(t *Table) map[string]*FileInfo {
	files := make(map[string]*FileInfo, len(t.Files))
	for _, f := range t.Files {
		files[f] = &FileInfo{Path: f}
	}
	byName := map[string]*FileInfo{} // Source.File as written -> info
	info := func(name string) *FileInfo {
		if fi := byName[name]; fi != nil {
			return fi
		}
		abs := absPath(name)
		fi := files[abs]
		if fi == nil {
			fi = &FileInfo{Path: abs}
			files[abs] = fi
		}
		byName[name] = fi
		return fi
	}
	count := func(entries []*Entry, field func(*FileInfo) *int) {
		var cur *FileInfo
		curName := ""
		for _, e := range entries {
			if cur == nil || e.Source.File != curName {
				cur, curName = info(e.Source.File), e.Source.File
			}
			*field(cur)++
		}
	}
	count(t.Outbound, func(f *FileInfo) *int { return &f.Outbound })
	count(t.Recipients, func(f *FileInfo) *int { return &f.Recipients })
	count(t.Senders, func(f *FileInfo) *int { return &f.Senders })
	for _, r := range t.Inbound {
		info(r.Source.File).Inbound++
	}
	return files
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
// first), or nil, nil if there is none. Testing entries are returned too.
// The error is always nil.
func (s *Store) OutboundByKey(key string) (*Entry, error) {
	return s.idx.out.get(NormalizeKey(key)), nil
}

// RecipientByKey returns the recipients entry with the given key
// (normalized first), or nil, nil. The error is always nil.
func (s *Store) RecipientByKey(key string) (*Entry, error) {
	return s.idx.rcpt.get(NormalizeKey(key)), nil
}

// SenderByKey returns the senders entry with the given key (normalized
// first), or nil, nil. The error is always nil.
func (s *Store) SenderByKey(key string) (*Entry, error) {
	return s.idx.snd.get(NormalizeKey(key)), nil
}

// InboundRuleByName returns the inbound rule called name, or nil, nil.
func (s *Store) InboundRuleByName(name string) (*InboundRule, error) {
	if name == "" {
		return nil, nil
	}
	db, err := s.memdb()
	if err != nil {
		return nil, err
	}
	raw, err := db.Txn(false).First(tableInbound, indexID, name)
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
	db, err := s.memdb()
	if err != nil {
		return nil, err
	}
	it, err := db.Txn(false).Get(tableTesting, indexID)
	if err != nil {
		return nil, fmt.Errorf("store: testing entries: %w", err)
	}
	var out []*Entry
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*testingRow).Entry)
	}
	return out, nil
}

// Files returns every file of the table (Table.Files, and the file of
// every entry and rule of a Table built by hand) with what it defines,
// ordered by path.
func (s *Store) Files() ([]FileInfo, error) {
	db, err := s.memdb()
	if err != nil {
		return nil, err
	}
	it, err := db.Txn(false).Get(tableFiles, indexID)
	if err != nil {
		return nil, fmt.Errorf("store: files: %w", err)
	}
	var out []FileInfo
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, *raw.(*FileInfo))
	}
	return out, nil
}

// Policies returns the distinct policies of the outbound, recipients and
// senders entries (testing entries included), ordered by text, with the
// number of entries using each.
func (s *Store) Policies() ([]PolicyUse, error) {
	return s.policies(indexID)
}

// PoliciesAtLevel returns the distinct policies at level l, ordered by
// text, with the number of entries using each.
func (s *Store) PoliciesAtLevel(l Level) ([]PolicyUse, error) {
	return s.policies(indexLevel, l)
}

func (s *Store) policies(index string, args ...any) ([]PolicyUse, error) {
	db, err := s.memdb()
	if err != nil {
		return nil, err
	}
	it, err := db.Txn(false).Get(tablePolicies, index, args...)
	if err != nil {
		return nil, fmt.Errorf("store: policies: %w", err)
	}
	var out []PolicyUse
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*policyRow).Use)
	}
	return out, nil
}
