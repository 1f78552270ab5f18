// Package policyd implements the server side of Postfix's SMTP access
// policy delegation protocol (SMTPD_POLICY_README): a request is a block of
// "name=value" lines ended by an empty line, the reply is "action=<text>"
// followed by an empty line, over a persistent connection.
//
// The package knows nothing of TLS policy: it decodes requests, calls a
// Handler and writes the Handler's Action. An error or panic in the Handler
// becomes a temporary deferral ("450 4.7.10 …"), never DUNNO or OK: the
// server fails closed.
//
// A client can hold little: lines and requests are capped (MaxLineSize,
// MaxRequestSize) before they are buffered, a request must arrive within
// ReadTimeout of its first byte and a reply be taken within ReadTimeout,
// idle connections close after IdleTimeout, and MaxConns caps each
// listener's connections. At the cap a new connection replaces the
// longest idle one, else the one whose request has been arriving for
// longer than SlowRequest (a slow-loris client), else it is refused at
// once; the log says so at most once per 10 s per kind.
package policyd

import (
	"context"
	"iter"
	"maps"
	"slices"
)

// Request is one policy delegation request: the attributes Postfix sent,
// name=value pairs with distinct names. Unknown attributes are kept and
// may be ignored by the Handler. Read them with Get, Lookup, Len, All or
// Map; build one with NewRequest (or Decoder.Decode) and Set.
//
// A Request the Server passes to a Handler belongs to the Server: it is
// valid until Check returns, then reused for the connection's next request
// (see Handler). The names and values it returns are ordinary immutable
// strings and stay valid; decoded names and values are substrings of one
// backing string per request, so a Handler keeping a value for long (e.g.
// as a map key) should strings.Clone it.
//
// The zero Request has no attributes. A Request must not be copied once
// it holds attributes (the copy would share them with the original); use
// NewRequest(r.Map()) for a copy.
type Request struct {
	// pairs are the attributes, in the order received or added.
	pairs []attr
	// index maps a hash of a name (attrHash) to pair index+1, 0 for an
	// empty slot, with linear probing. It covers all of pairs while
	// len(pairs) <= maxIndexedAttrs; beyond that it is stale and
	// lookups scan pairs instead.
	index [attrIndexSlots]uint16
}

// attr is one attribute of a Request.
type attr struct{ name, value string }

const (
	// attrIndexSlots is the size of Request.index, a power of 2.
	attrIndexSlots = 128
	// maxIndexedAttrs is the most attributes Request.index holds, a load
	// factor of 1/2. Postfix sends 29 (3.7), a few more in later versions.
	maxIndexedAttrs = attrIndexSlots / 2
)

// attrHash is the first index slot probed for name: cheap, from its length
// and first and last bytes, which tell Postfix's attribute names apart
// well enough (29 names, 2 collisions). Names a client makes up may
// collide more; the index holds at most maxIndexedAttrs, so probing stays
// bounded.
func attrHash(name string) uint {
	if name == "" {
		return 0
	}
	return (uint(len(name))*31 + uint(name[0])*7 + uint(name[len(name)-1])) & (attrIndexSlots - 1)
}

// NewRequest returns a Request holding attrs, in name order: a request
// built by hand (tests, "tlspolicyd query --inbound"). It does not keep
// attrs.
func NewRequest(attrs map[string]string) *Request {
	r := &Request{pairs: make([]attr, 0, len(attrs))}
	for _, name := range slices.Sorted(maps.Keys(attrs)) {
		r.add(name, attrs[name])
	}
	return r
}

// Get returns the value of attribute name, or "" when it was not sent.
func (r *Request) Get(name string) string {
	v, _ := r.Lookup(name)
	return v
}

// Lookup returns the value of attribute name and whether it was sent.
func (r *Request) Lookup(name string) (string, bool) {
	if i := r.find(name); i >= 0 {
		return r.pairs[i].value, true
	}
	return "", false
}

// Len returns the number of attributes.
func (r *Request) Len() int { return len(r.pairs) }

// All returns the attributes as name, value pairs: in the order they were
// received for a decoded Request, in name order for one from NewRequest,
// attributes added by Set after them.
func (r *Request) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, p := range r.pairs {
			if !yield(p.name, p.value) {
				return
			}
		}
	}
}

// Map returns the attributes in a new map, a copy: changing one does not
// change the other.
func (r *Request) Map() map[string]string {
	m := make(map[string]string, len(r.pairs))
	for _, p := range r.pairs {
		m[p.name] = p.value
	}
	return m
}

// Set sets attribute name to value: it replaces the value of an attribute
// already there, else adds the attribute after the others.
func (r *Request) Set(name, value string) {
	if i := r.find(name); i >= 0 {
		r.pairs[i].value = value
		return
	}
	r.add(name, value)
}

// find returns the position of attribute name in r.pairs, or -1.
func (r *Request) find(name string) int {
	if len(r.pairs) > maxIndexedAttrs {
		for i := range r.pairs {
			if r.pairs[i].name == name {
				return i
			}
		}
		return -1
	}
	_, i := r.probe(name)
	return i
}

// probe looks name up in r.index, which must cover r.pairs: it returns the
// slot holding name and its position in r.pairs, or the empty slot where
// name would go and -1.
func (r *Request) probe(name string) (slot uint, pos int) {
	h := attrHash(name)
	for ; r.index[h] != 0; h = (h + 1) & (attrIndexSlots - 1) {
		if j := int(r.index[h]) - 1; r.pairs[j].name == name {
			return h, j
		}
	}
	return h, -1
}

// add appends an attribute, indexing it while the index has room. It
// reports false, adding nothing, when the index shows that name is
// already there; beyond the index it does not check (the caller does).
func (r *Request) add(name, value string) bool {
	n := len(r.pairs)
	if n < maxIndexedAttrs {
		h, pos := r.probe(name)
		if pos >= 0 {
			return false
		}
		r.index[h] = uint16(n + 1)
	}
	r.pairs = append(r.pairs, attr{name, value})
	return true
}

// reset empties r for n attributes, keeping its storage unless it grew
// past maxReusedAttrs (see Decoder.Decode).
func (r *Request) reset(n int) {
	if cap(r.pairs) < n || cap(r.pairs) > maxReusedAttrs {
		r.pairs = make([]attr, 0, max(n, 32))
	} else {
		r.pairs = r.pairs[:0]
	}
	clear(r.index[:])
}

// Action is the text sent back as "action=<Action>", e.g. "DUNNO",
// "450 4.7.10 TLS is required …", "PREPEND X-TLS-Policy: would defer".
type Action string

// Handler decides the action for one request. A non-nil error is answered
// with a temporary deferral (fail closed).
//
// Check must not keep req once it has returned: neither itself nor in a
// goroutine it started, a closure or a log record it defers. The Server
// empties and refills the same Request for the connection's next request
// (Decoder.Decode), which spares allocating one per request. Copy what
// must outlive the call: the strings themselves may be kept (see Request).
// Wrappers that observe requests (metrics, logging) are bound by the same
// rule.
type Handler interface {
	Check(ctx context.Context, req *Request) (Action, error)
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, req *Request) (Action, error)

// Check calls f.
func (f HandlerFunc) Check(ctx context.Context, req *Request) (Action, error) { return f(ctx, req) }

var _ Handler = HandlerFunc(nil)
