package srccache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// go-memdb schema, in the style of nomad/state/schema.go.
const (
	tableRecords = "records"

	indexID          = "id"           // kind, then key: unique
	indexDomain      = "domain"       // every kind of one key
	indexRefresh     = "refresh"      // next refresh time, earliest first
	indexKindRefresh = "kind_refresh" // one kind's records by next refresh time: what the Scheduler walks
	indexKindExpires = "kind_expires" // one kind's records by expiry, earliest first: what eviction drops
)

func dbSchema() *memdb.DBSchema {
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{tableRecords: recordsTableSchema()}}
}

func recordsTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableRecords,
		Indexes: map[string]*memdb.IndexSchema{
			indexID: {
				Name:   indexID,
				Unique: true,
				Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "Kind"},
					&memdb.StringFieldIndex{Field: "Domain"},
				}},
			},
			indexDomain:  {Name: indexDomain, Indexer: &memdb.StringFieldIndex{Field: "Domain"}},
			indexRefresh: {Name: indexRefresh, Indexer: timeIndex(func(r *Record) time.Time { return r.Refresh })},
			indexKindRefresh: {Name: indexKindRefresh, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.StringFieldIndex{Field: "Kind"}, timeIndex(func(r *Record) time.Time { return r.Refresh }),
			}}},
			indexKindExpires: {Name: indexKindExpires, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.StringFieldIndex{Field: "Kind"}, timeIndex(func(r *Record) time.Time { return r.Expires }),
			}}},
		},
	}
}

// timeIndex indexes a time field of a Record in time order: the Unix
// nanoseconds, sign bit flipped, big-endian; times before 1970 (the zero
// time) sort first, times past the int64 nanoseconds (year 2262) last.
type timeIndex func(*Record) time.Time

// lastIndexTime is the latest time the index tells apart.
var lastIndexTime = time.Unix(0, math.MaxInt64)

func encodeTime(t time.Time) []byte {
	b := make([]byte, 8)
	switch {
	case t.After(lastIndexTime):
		binary.BigEndian.PutUint64(b, math.MaxUint64)
	case t.Unix() >= 0:
		binary.BigEndian.PutUint64(b, uint64(t.UnixNano())^(1<<63))
	}
	return b
}

// FromObject implements memdb.SingleIndexer.
func (f timeIndex) FromObject(obj any) (bool, []byte, error) {
	r, ok := obj.(*Record)
	if !ok {
		return false, nil, fmt.Errorf("srccache: indexing a %T", obj)
	}
	return true, encodeTime(f(r)), nil
}

// FromArgs implements memdb.Indexer: one time.Time.
func (f timeIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, errors.New("srccache: want one time argument")
	}
	t, ok := args[0].(time.Time)
	if !ok {
		return nil, fmt.Errorf("srccache: time index argument is a %T", args[0])
	}
	return encodeTime(t), nil
}
