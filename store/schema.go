package store

import (
	memdb "github.com/hashicorp/go-memdb"
)

// go-memdb schema of a Store, in the style of nomad/state/schema.go: one
// name constant and one schema function per table. Stored objects are the
// Table's own *Entry and *InboundRule values and are never modified.
const (
	tableOutbound   = "outbound"   // *Entry: next-hop keys (YAML outbound + Postfix includes)
	tableRecipients = "recipients" // *Entry: recipient address / domain / .domain
	tableSenders    = "senders"    // *Entry: sender address / domain / .domain
	tableInbound    = "inbound"    // *InboundRule

	indexID      = "id"      // every table: the unique key (go-memdb requires "id")
	indexTesting = "testing" // entries and rules by Testing flag
)

// dbSchema returns the schema of a Store's database.
func dbSchema() *memdb.DBSchema {
	return &memdb.DBSchema{
		Tables: map[string]*memdb.TableSchema{
			tableOutbound:   entryTableSchema(tableOutbound),
			tableRecipients: entryTableSchema(tableRecipients),
			tableSenders:    entryTableSchema(tableSenders),
			tableInbound:    inboundTableSchema(),
		},
	}
}

// entryTableSchema is the schema of the outbound, recipients and senders
// tables, which all hold *Entry.
func entryTableSchema(name string) *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: name,
		Indexes: map[string]*memdb.IndexSchema{
			// id: the normalized key (lower-case, no trailing dot), unique
			// across all files of the table. Lookups normalize first, so
			// the index itself is case-sensitive.
			indexID: {
				Name:    indexID,
				Unique:  true,
				Indexer: &memdb.StringFieldIndex{Field: "Key"},
			},
			// testing: entries in testing mode, which the prober checks
			// and reports on.
			indexTesting: {
				Name:    indexTesting,
				Indexer: &memdb.BoolFieldIndex{Field: "Testing"},
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
			// testing: rules in testing mode (never block).
			indexTesting: {
				Name:    indexTesting,
				Indexer: &memdb.BoolFieldIndex{Field: "Testing"},
			},
		},
	}
}
