package store

import "hash/maphash"

// keySeed seeds the key hashes of every keyIndex of the process.
var keySeed = maphash.MakeSeed()

// keyIndex finds entries of a list by key: an open-addressing hash table
// (linear probing, at most half full) whose slots are single uint64s —
// the upper 32 bits of the key's hash and the entry's position in the
// list plus one (0 is an empty slot; lists are far shorter than 2³²).
// The keys themselves stay in the entries. The zero keyIndex is empty.
//
// It serves where Go maps of the keys would do, in the parser (duplicate
// detection) and in the Store (lookups): it holds no pointers for the
// garbage collector to scan and is a fraction of a map's size; a lookup
// is the hash, one run of slots (usually one cache line), and the
// entry's key to compare when the 32 hash bits match.
type keyIndex struct {
	slots []uint64
	n     int // keys indexed
}

// newKeyIndex returns an index sized for n keys.
func newKeyIndex(n int) *keyIndex {
	return &keyIndex{slots: make([]uint64, max(16, 2*n))}
}

// keyTag returns the hash bits a slot keeps for key.
func keyTag(key string) uint64 { return maphash.String(keySeed, key) >> 32 }

// home is the first slot to probe for tag: the tag scaled to the table
// size (so a table can grow without the keys: the tag is enough).
func (x *keyIndex) home(tag uint64) int { return int(tag * uint64(len(x.slots)) >> 32) }

// find returns the position in list of the entry with key, or -1.
func (x *keyIndex) find(list []*Entry, key string) int {
	if x.n == 0 {
		return -1
	}
	tag := keyTag(key)
	for i := x.home(tag); ; {
		s := x.slots[i]
		if s == 0 {
			return -1
		}
		if s>>32 == tag {
			if pos := int(uint32(s)) - 1; list[pos].Key == key {
				return pos
			}
		}
		if i++; i == len(x.slots) {
			i = 0
		}
	}
}

// insert indexes list[pos] unless an entry with its key is indexed
// already; it returns that entry's position, or -1 if list[pos] was
// inserted.
func (x *keyIndex) insert(list []*Entry, pos int) int {
	if 2*(x.n+1) > len(x.slots) {
		x.grow()
	}
	key := list[pos].Key
	tag := keyTag(key)
	for i := x.home(tag); ; {
		s := x.slots[i]
		if s == 0 {
			x.slots[i] = tag<<32 | uint64(pos+1)
			x.n++
			return -1
		}
		if s>>32 == tag {
			if p := int(uint32(s)) - 1; list[p].Key == key {
				return p
			}
		}
		if i++; i == len(x.slots) {
			i = 0
		}
	}
}

// reserve makes room for n keys in all.
func (x *keyIndex) reserve(n int) {
	if 2*n > len(x.slots) {
		x.resize(2 * n)
	}
}

// trim shrinks a table reserved for more than twice the keys it holds
// to the size newKeyIndex gives them.
func (x *keyIndex) trim() {
	if want := max(16, 2*x.n); len(x.slots) > 2*want {
		x.resize(want)
	}
}

// grow doubles the table.
func (x *keyIndex) grow() { x.resize(max(16, 2*len(x.slots))) }

// resize moves the keys to a table of size slots.
func (x *keyIndex) resize(size int) {
	old := x.slots
	x.slots = make([]uint64, size)
	for _, s := range old {
		if s == 0 {
			continue
		}
		i := x.home(s >> 32)
		for x.slots[i] != 0 {
			if i++; i == len(x.slots) {
				i = 0
			}
		}
		x.slots[i] = s
	}
}

// listKeys is a parser's key index of each entry list (by section) and a
// fingerprint of the list it indexes: the entries' pointers in order.
// Build uses an index only if its list still has that fingerprint, so a
// Table whose lists were changed after parsing is indexed anew; checking
// the fingerprint is far cheaper than indexing again.
type listKeys struct {
	idx [len(sectionNames)]keyIndex
	sum [len(sectionNames)]uint64
}

// listSum folds entry e into the fingerprint h of a list.
func listSum(h uint64, e *Entry) uint64 {
	return (h ^ maphash.Comparable(keySeed, e)) * 0x100000001b3
}

// reusable returns the parser's index of list, the entries of section
// sec, if it indexes exactly that list.
func (k *listKeys) reusable(sec uint8, list []*Entry) (keyIndex, bool) {
	if k == nil || k.idx[sec].n != len(list) {
		return keyIndex{}, false
	}
	var h uint64
	for _, e := range list {
		h = listSum(h, e)
	}
	return k.idx[sec], h == k.sum[sec]
}
