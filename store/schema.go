package store

import (
	memdb "github.com/hashicorp/go-memdb"
)

// go-memdb schema of a Store, in the style of nomad/state/schema.go: one
// name constant and one schema function per table.
//
// Only the small parts of a table live in go-memdb: its files, its
// distinct policies, its inbound rules and its testing entries: rows in
// the thousands for a table of a million entries (testing entries, one row
// each, are meant to be few). The entries
// themselves are found through the key indexes that resolution uses
// (index in resolve.go, keyIndex in keyindex.go), also for OutboundByKey,
// RecipientByKey and SenderByKey: go-immutable-radix keeps a node, a
// leaf and a mutation channel per key and index, far too much per entry.
//
// Stored objects are never modified after the transaction commits.
const (
	tableFiles    = "files"    // *FileInfo: one row per file read
	tablePolicies = "policies" // *policyRow: one row per distinct policy text
	tableInbound  = "inbound"  // *InboundRule
	tableTesting  = "testing"  // *testingRow: entries with testing: true

	indexID    = "id"    // every table: the unique key (go-memdb requires "id")
	indexLevel = "level" // policies by Level
)

// Sections of a table, in the order TestingEntries returns them.
const (
	sectionOutbound uint8 = iota
	sectionRecipients
	sectionSenders
)

// sectionNames are the sections' names in the table and in messages.
var sectionNames = [...]string{sectionOutbound: "outbound", sectionRecipients: "recipients", sectionSenders: "senders"}

// policyRow is a row of the policies table.
type policyRow struct {
	Text  string // Policy.Text: the id
	Level Level
	Use   PolicyUse
}

// testingRow is a row of the testing table: an entry in testing mode.
type testingRow struct {
	Section uint8 // sectionOutbound, sectionRecipients or sectionSenders
	Key     string
	Entry   *Entry
}

// dbSchema returns the schema of a Store's database.
func dbSchema() *memdb.DBSchema {
	return &memdb.DBSchema{
		Tables: map[string]*memdb.TableSchema{
			tableFiles:    filesTableSchema(),
			tablePolicies: policiesTableSchema(),
			tableInbound:  inboundTableSchema(),
			tableTesting:  testingTableSchema(),
		},
	}
}

// filesTableSchema is the schema of the files table.
func filesTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableFiles,
		Indexes: map[string]*memdb.IndexSchema{
			// id: the absolute path.
			indexID: {
				Name:    indexID,
				Unique:  true,
				Indexer: &memdb.StringFieldIndex{Field: "Path"},
			},
		},
	}
}

// policiesTableSchema is the schema of the distinct policies table.
func policiesTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tablePolicies,
		Indexes: map[string]*memdb.IndexSchema{
			// id: the policy text, as answered to Postfix.
			indexID: {
				Name:    indexID,
				Unique:  true,
				Indexer: &memdb.StringFieldIndex{Field: "Text"},
			},
			// level: the policies of one security level.
			indexLevel: {
				Name:    indexLevel,
				Indexer: &memdb.IntFieldIndex{Field: "Level"},
			},
		},
	}
}

// inboundTableSchema is the schema of the inbound rules table.
func inboundTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableInbound,
		Indexes: map[string]*memdb.IndexSchema{
			// id: the rule name, unique across all files of the table.
			indexID: {
				Name:    indexID,
				Unique:  true,
				Indexer: &memdb.StringFieldIndex{Field: "Name"},
			},
		},
	}
}

// testingTableSchema is the schema of the testing entries table.
func testingTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableTesting,
		Indexes: map[string]*memdb.IndexSchema{
			// id: section, then the normalized key; iterating it gives
			// outbound, recipients, senders, each by key.
			indexID: {
				Name:   indexID,
				Unique: true,
				Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.UintFieldIndex{Field: "Section"},
					&memdb.StringFieldIndex{Field: "Key"},
				}},
			},
		},
	}
}
