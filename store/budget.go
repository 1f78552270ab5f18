package store

import "sync/atomic"

// A YAML file is decoded into a tree of nodes before it is walked, at
// about 200 bytes a node whatever the node's size: a 16 MB file of
// "[a,a,a,…]" held 1.7 GB. The file size cap alone does not bound that,
// so every file's node count is bounded from its bytes before it is
// decoded (nodeBound), and a load refuses files once its total passes
// maxLoadNodes.

// nodeBound returns an upper bound of the YAML nodes data decodes to
// (every document, go-yaml's DocumentNode included), in one pass over
// the bytes without decoding. Two nodes never come without a byte
// between them that starts or separates one: a line break, a flow
// indicator ("[", "{", ","), a block entry or key indicator ("- ",
// "? "), or a value indicator (":" before white space or a flow
// indicator, or right after a quoted or bracketed key). Each such byte
// accounts for at most two nodes (a key and its empty value in a flow
// mapping, "{a,b}"); comments and quoted text only make the bound
// larger. FuzzNodeBound checks it against the decoder.
func nodeBound(data []byte) int {
	n := 0
	for i, c := range data {
		switch c {
		case '\n', '\r', ',', '[', '{':
			n++
		case '-', '?':
			if i+1 == len(data) || isYAMLSpace(data[i+1]) {
				n++
			}
		case ':':
			if i+1 == len(data) || isYAMLSpace(data[i+1]) || isFlowIndicator(data[i+1]) || afterKey(data[:i]) {
				n++
			}
		case 0x85: // NEL (C2 85), and LS, PS (E2 80 A8/A9): YAML line breaks
			if i > 0 && data[i-1] == 0xc2 {
				n++
			}
		case 0xa8, 0xa9:
			if i > 1 && data[i-1] == 0x80 && data[i-2] == 0xe2 {
				n++
			}
		}
	}
	return 2*(n+1) + 2
}

func isYAMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func isFlowIndicator(c byte) bool {
	return c == ',' || c == '[' || c == ']' || c == '{' || c == '}'
}

// afterKey reports whether before ends, but for blanks, with the end of
// a quoted or bracketed node, after which ":" is a value indicator even
// when no blank follows it.
func afterKey(before []byte) bool {
	i := len(before) - 1
	for i >= 0 && (before[i] == ' ' || before[i] == '\t') {
		i--
	}
	if i < 0 {
		return false
	}
	switch before[i] {
	case '"', '\'', ']', '}':
		return true
	}
	return false
}

// maxLoadNodes bounds nodeBound summed over the files of one load, and
// the lines of its included Postfix files (two each): one load decodes at
// most about half as many nodes. The generated 1,000,000-entry table of
// the benchmarks (writeBenchDir) needs 4,372,048.
var maxLoadNodes = 6_000_000 // a variable for tests

// budget is what the files of one load may still decode; the parser and
// its parallel workers share it.
type budget struct {
	used     atomic.Int64
	exceeded atomic.Bool
}

// take reserves n nodes; false (nothing to decode) once the load is over
// maxLoadNodes.
func (b *budget) take(n int) bool {
	if b.used.Add(int64(n)) > int64(maxLoadNodes) {
		b.exceeded.Store(true)
		return false
	}
	return true
}
