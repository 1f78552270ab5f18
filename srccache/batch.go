package srccache

import (
	"errors"
	"fmt"
)

// PutAll is Put and Delete for many records of one kind in one
// transaction: puts replace (or add) records, deletes names keys of kind
// to remove. A go-memdb transaction per record copies the index nodes on
// its path every time (34 KB and 75 µs a record in a cache of 100,000):
// following a large table (the monitor's Sync) takes one transaction.
// OnChange, eviction listeners and the bound apply as for Put and Delete.
func (c *Cache) PutAll(kind Kind, puts []*Record, deletes []string) error {
	for _, r := range puts {
		if r == nil || r.Kind != kind || r.Domain == "" {
			return errors.New("srccache: PutAll: a record without the kind or a domain")
		}
	}
	if len(puts) == 0 && len(deletes) == 0 {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	txn := c.db.Txn(true)
	defer txn.Abort()
	type change struct{ old, cur *Record }
	var changes []change
	n := c.kinds[kind]
	for _, key := range deletes {
		raw, err := txn.First(tableRecords, indexID, string(kind), key)
		if err != nil {
			return fmt.Errorf("srccache: %w", err)
		}
		if raw == nil {
			continue
		}
		if err := txn.Delete(tableRecords, raw); err != nil {
			return fmt.Errorf("srccache: delete %s %s: %w", kind, key, err)
		}
		changes = append(changes, change{raw.(*Record), nil})
		n--
	}
	for _, r := range puts {
		raw, err := txn.First(tableRecords, indexID, string(kind), r.Domain)
		if err != nil {
			return fmt.Errorf("srccache: %w", err)
		}
		if err := txn.Insert(tableRecords, r); err != nil {
			return fmt.Errorf("srccache: insert %s %s: %w", kind, r.Domain, err)
		}
		var old *Record
		if raw != nil {
			old = raw.(*Record)
		} else {
			n++
		}
		changes = append(changes, change{old, r})
	}
	evicted, err := c.evictLocked(txn, kind, n)
	if err != nil {
		return err
	}
	txn.Commit()
	c.rmu.Lock()
	for _, ch := range changes {
		if ch.cur == nil {
			delete(c.front, frontKey{kind, ch.old.Domain})
		} else {
			c.front[frontKey{kind, ch.cur.Domain}] = ch.cur
		}
	}
	for _, v := range evicted {
		delete(c.front, frontKey{kind, v.Domain})
	}
	c.rmu.Unlock()
	c.addCount(kind, n-len(evicted)-c.kinds[kind])
	c.noteEvicted(kind, len(evicted))
	c.changed.Store(true)
	if c.opts.OnChange != nil {
		for _, ch := range changes {
			c.opts.OnChange(ch.old, ch.cur)
		}
	}
	c.written(evicted)
	return nil
}
