package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Values of Defaults.Learn (DESIGN.md §6).
const (
	LearnOff     = "off"     // probe results are not used
	LearnReport  = "report"  // probe results are recorded, answers do not change
	LearnEnforce = "enforce" // unlisted domains with working STARTTLS answer encrypt
)

// Inbound rule actions.
const (
	ActionDefer  = "defer"  // 450 4.7.10
	ActionReject = "reject" // 550 5.7.10
)

// Inbound rule requirements (DESIGN.md §7).
const (
	RequireTLS         = "tls"         // encryption_protocol non-empty
	RequireTLS12       = "tls1.2"      // at least TLS 1.2
	RequireTLS13       = "tls1.3"      // at least TLS 1.3
	RequireCert        = "cert"        // a client certificate was presented
	RequireFingerprint = "fingerprint" // the client certificate or key is in Fingerprints
)

// DefaultLearnMaxAge is learn_max_age when the table does not set it.
const DefaultLearnMaxAge = 720 * time.Hour

// maxFileSize caps every file read, so a wrong include (a log file, a
// device) cannot exhaust memory.
const maxFileSize = 64 << 20

// Defaults is the table's defaults section, with unset fields filled in.
type Defaults struct {
	Outbound       *Policy // answer for keys nothing else decides; nil = NOTFOUND
	OutboundSource Source  // where defaults.outbound was set (zero if not)
	Learn          string  // LearnOff, LearnReport or LearnEnforce
	LearnMaxAge    time.Duration
	InboundAction  string // ActionDefer or ActionReject, for rules that do not say
}

// Entry is one entry of the outbound, recipients or senders section, or of
// an included Postfix tls_policy file. Entries are immutable.
type Entry struct {
	Key      string // normalized: lower-case, no trailing dot
	Policy   *Policy
	Testing  bool // answered as if absent; the prober reports what enforcing would do
	Note     string
	ReviewBy time.Time // zero if not set; Lint warns once it has passed
	Source   Source
}

// InboundRule is one rule of the inbound section (DESIGN.md §7). List
// entries are normalized: lower-case names and addresses, canonical IP
// addresses and prefixes, fingerprints as upper-case hex with colons (the
// form Postfix sends in ccert_fingerprint).
type InboundRule struct {
	Name         string
	From         []string // sender address, domain, .domain, or "<>" for the null sender
	To           []string // recipient address, domain or .domain
	Client       []string // IP address, CIDR prefix, host name or .suffix
	Require      string   // RequireTLS, RequireTLS12, RequireTLS13, RequireCert, RequireFingerprint
	Fingerprints []string // with RequireFingerprint only
	Action       string   // ActionDefer or ActionReject (default applied)
	Testing      bool     // never blocks: log, count, alert, optional header
	Header       string   // testing only: header name for PREPEND
	Source       Source
}

// Table is a parsed and validated policy table.
type Table struct {
	Defaults   Defaults
	Outbound   []*Entry // YAML outbound entries and included Postfix entries
	Recipients []*Entry
	Senders    []*Entry
	Inbound    []*InboundRule
	// Files is every file read, includes too: absolute paths, sorted.
	Files []string
	// Dirs is the directories to watch for changes: the table directory
	// (or the table file's directory) and every include's directory;
	// absolute, sorted, without duplicates.
	Dirs []string

	// keys is the index of the entry lists' keys the parser built to find
	// duplicates, for Build to reuse (see listKeys).
	keys *listKeys
}

// listKeys is a parser's key index of each entry list (by section) and a
// fingerprint of the list it indexes: the entries' pointers in order.
// Build uses an index only if its list still has that fingerprint, so a
// Table whose lists were changed after parsing is indexed anew. (Indexing
// 1,000,000 keys again took 0.27 s of a start-up; the fingerprint 12 ms.)
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

// ParseFile parses one YAML table file read from r; name is used in
// error messages and to resolve includes, which are read from disk
// relative to name's directory. The error, if any, is a *LoadError, whose
// ErrorList holds every problem found.
func ParseFile(name string, r io.Reader) (*Table, error) {
	p := newParser()
	p.addFile(name)
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	switch {
	case err != nil:
		p.errorf(Source{File: name}, "cannot read: %v", err)
	case len(data) > maxFileSize:
		p.errorf(Source{File: name}, "file is larger than %d bytes", maxFileSize)
	default:
		p.parseYAML(name, data)
	}
	return p.finish()
}

// LoadTable loads the table at path: one YAML file, or every *.yaml and
// *.yml file of a directory (not its subdirectories; names starting with
// "." are skipped, as editors' lock and backup files are), in name order.
// Includes are resolved relative to the including file. The error, if any,
// is a *LoadError, whose ErrorList holds every problem found.
//
// The files of a directory are parsed in parallel, up to GOMAXPROCS at a
// time; the table, its errors and their order are those of parsing the
// files one after the other.
func LoadTable(path string) (*Table, error) {
	return loadTable(context.Background(), path, runtime.GOMAXPROCS(0))
}

// loadTable is LoadTable parsing up to workers files at a time. When ctx
// is done it stops before the next file and returns ctx's error.
func loadTable(ctx context.Context, path string, workers int) (*Table, error) {
	p := newParser()
	fi, err := os.Stat(path)
	if err != nil {
		p.errorf(Source{File: path}, "%v", pathErr(err))
		return p.finish()
	}
	if !fi.IsDir() {
		p.loadYAML(path)
		return p.finish()
	}
	p.addDir(path)
	ents, err := os.ReadDir(path)
	if err != nil {
		p.errorf(Source{File: path}, "%v", pathErr(err))
		return p.finish()
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			continue
		}
		if fi, err := os.Stat(filepath.Join(path, n)); err == nil && fi.IsDir() {
			continue
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		p.errorf(Source{File: path}, "no *.yaml or *.yml files in directory")
		return p.finish()
	}
	slices.Sort(names)
	paths := make([]string, len(names))
	for i, n := range names {
		paths[i] = filepath.Join(path, n)
	}
	p.loadFiles(ctx, paths, workers)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return p.finish()
}

// loadFiles loads the table files in order, parsing up to workers of
// them at a time.
//
// The YAML decoding and the per-entry work (keys, policies, long forms)
// of each file depend on nothing outside it and run in parallel: a worker
// parser (deferred) records what its file defines and every error it
// finds as a list of events, in the order the sequential parser would
// have found them. Everything that depends on the files before — duplicate
// keys, rules and defaults ("first at" the earlier place), includes, the
// defaults and inbound sections — happens when the events are replayed,
// one file after the other in name order, while later files are still
// being parsed. Errors, the table and its order are therefore exactly
// those of loading the files one by one (TestLoadTableParallel).
//
// When ctx is done, it returns before the next file (the workers finish
// the files they are parsing and parse no more).
func (p *parser) loadFiles(ctx context.Context, paths []string, workers int) {
	if workers <= 1 || len(paths) <= 1 {
		for _, name := range paths {
			if ctx.Err() != nil {
				return
			}
			p.loadYAML(name)
		}
		return
	}
	type result struct {
		events []event
		done   chan struct{}
	}
	results := make([]result, len(paths))
	for i := range results {
		results[i].done = make(chan struct{})
	}
	sem := make(chan struct{}, workers)
	go func() {
		for i, name := range paths {
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				if ctx.Err() == nil {
					results[i].events = parseDeferred(name)
				}
				close(results[i].done)
			}()
		}
	}()
	// The file sizes, so that the first files replayed reserve the key
	// indexes for the whole table (replay, p.ahead).
	sizes := make([]int64, len(paths))
	var left int64
	for i, name := range paths {
		if fi, err := os.Stat(name); err == nil {
			sizes[i] = fi.Size()
			left += sizes[i]
		}
	}
	var done int64
	for i, name := range paths {
		select {
		case <-results[i].done:
		case <-ctx.Done():
			return
		}
		done, left = done+sizes[i], left-sizes[i]
		p.ahead = 0
		if done > 0 {
			p.ahead = float64(left) / float64(done)
		}
		p.replay(name, results[i].events)
		results[i].events = nil // garbage as soon as replayed
	}
	p.ahead = 0
	for sec := range p.keys.idx {
		p.keys.idx[sec].trim()
	}
}

// parseDeferred parses one file as a worker of loadFiles: what depends
// on other files is returned as events for replay.
func parseDeferred(name string) []event {
	w := newParser()
	w.deferred = true
	w.loadYAML(name)
	return w.events
}

// eventKind is what an event records.
type eventKind uint8

const (
	evError    eventKind = iota // err
	evEntry                     // e, of section
	evDefaults                  // node: the defaults section
	evInbound                   // node: the inbound section
	evInclude                   // node: the include section
)

// event is one step of a deferred parse that depends on the files before
// it (see loadFiles).
type event struct {
	e       *Entry
	err     *Error
	node    *yaml.Node
	kind    eventKind
	section uint8 // of e: sectionOutbound, sectionRecipients, sectionSenders
}

// replay applies the events of a file parsed by a deferred parser.
func (p *parser) replay(file string, events []event) {
	p.addFile(file)
	var n [len(sectionNames)]int
	for _, ev := range events {
		if ev.kind == evEntry {
			n[ev.section]++
		}
	}
	for sec, n := range n {
		p.reserve(uint8(sec), n)
	}
	for _, ev := range events {
		switch ev.kind {
		case evError:
			p.errs = append(p.errs, ev.err)
		case evEntry:
			ev.e.Policy = p.canonical(ev.e.Policy)
			p.add(ev.section, ev.e)
		case evDefaults:
			p.defaults(file, ev.node)
		case evInbound:
			p.inbound(file, ev.node)
		case evInclude:
			p.include(file, ev.node)
		}
	}
}

// canonical returns the policy of the table with pol's text: each worker
// of loadFiles interns its own file's policies.
func (p *parser) canonical(pol *Policy) *Policy {
	if c, ok := p.canon[pol]; ok {
		return c
	}
	c := pol
	if r, ok := p.pols[pol.Text]; ok && r.p != nil {
		c = r.p
	} else {
		p.pols[pol.Text] = parsedPolicy{p: pol}
	}
	p.canon[pol] = c
	return c
}

// pathErr drops the path from an *fs.PathError: the message is already
// prefixed with it.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("cannot %s: %w", pe.Op, pe.Err)
	}
	return err
}

// readRegular reads a regular file of at most maxFileSize bytes.
func readRegular(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, pathErr(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, pathErr(err)
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("file is larger than %d bytes", maxFileSize)
	}
	// Sized by Stat, read to EOF: the file may have grown meanwhile
	// (io.ReadAll alone grew its buffer a dozen times for a 12 MB file).
	buf := bytes.NewBuffer(make([]byte, 0, fi.Size()+bytes.MinRead))
	_, err = buf.ReadFrom(io.LimitReader(f, maxFileSize+1))
	data := buf.Bytes()
	if err != nil {
		return nil, pathErr(err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("file is larger than %d bytes", maxFileSize)
	}
	return data, nil
}

// parser collects a table and every error found while reading it.
type parser struct {
	t        *Table
	errs     ErrorList
	keys     listKeys          // of t.Outbound, t.Recipients, t.Senders
	ruleSeen map[string]Source // inbound rule name -> first definition
	defSeen  map[string]Source // defaults field -> first setting
	incSeen  map[string]Source // absolute include path -> first include
	files    map[string]bool
	dirs     map[string]bool
	// pols interns policies by the text as written: a table has few
	// distinct policies, each parsed once and shared by its entries (a
	// *Policy per entry was 113 MB of a 1,000,000-entry table).
	pols  map[string]parsedPolicy
	canon map[*Policy]*Policy // a worker's policy -> the table's (replay)

	// deferred: a worker of loadFiles, which records errors, entries and
	// the sections that depend on other files as events instead.
	deferred bool
	events   []event
	// ahead is, while loadFiles replays a file, the bytes of the files
	// after it over the bytes up to it: how much more of the table is to
	// come (reserve).
	ahead float64
}

// parsedPolicy is ParsePolicy's result for one policy text.
type parsedPolicy struct {
	p   *Policy
	err error
}

// policy returns ParsePolicy(s), parsing each distinct s once.
func (p *parser) policy(s string) (*Policy, error) {
	if r, ok := p.pols[s]; ok {
		return r.p, r.err
	}
	pol, err := ParsePolicy(s)
	if err == nil {
		// Texts as written may differ in whitespace only.
		if canon, ok := p.pols[pol.Text]; ok && canon.p != nil {
			pol = canon.p
		} else {
			p.pols[pol.Text] = parsedPolicy{p: pol}
		}
	}
	p.pols[s] = parsedPolicy{pol, err}
	return pol, err
}

func newParser() *parser {
	return &parser{
		t:        &Table{},
		ruleSeen: map[string]Source{},
		defSeen:  map[string]Source{},
		incSeen:  map[string]Source{},
		files:    map[string]bool{},
		dirs:     map[string]bool{},
		pols:     map[string]parsedPolicy{},
		canon:    map[*Policy]*Policy{},
	}
}

func (p *parser) errorf(src Source, format string, args ...any) {
	err := &Error{Source: src, Msg: fmt.Sprintf(format, args...)}
	if p.deferred {
		p.events = append(p.events, event{kind: evError, err: err})
		return
	}
	p.errs = append(p.errs, err)
}

func absPath(name string) string {
	if a, err := filepath.Abs(name); err == nil {
		return a
	}
	return filepath.Clean(name)
}

func (p *parser) addFile(name string) {
	a := absPath(name)
	p.files[a] = true
	p.dirs[filepath.Dir(a)] = true
}

func (p *parser) addDir(name string) { p.dirs[absPath(name)] = true }

func (p *parser) loadYAML(name string) {
	p.addFile(name)
	data, err := readRegular(name)
	if err != nil {
		p.errorf(Source{File: name}, "%v", err)
		return
	}
	p.parseYAML(name, data)
}

// finish fills in defaults and returns the table, or every error found.
func (p *parser) finish() (*Table, error) {
	t := p.t
	d := &t.Defaults
	if d.Learn == "" {
		d.Learn = LearnOff
	}
	if d.LearnMaxAge == 0 {
		d.LearnMaxAge = DefaultLearnMaxAge
	}
	if d.InboundAction == "" {
		d.InboundAction = ActionDefer
	}
	for _, r := range t.Inbound {
		if r.Action == "" {
			r.Action = d.InboundAction
		}
	}
	for f := range p.files {
		t.Files = append(t.Files, f)
	}
	slices.Sort(t.Files)
	for d := range p.dirs {
		t.Dirs = append(t.Dirs, d)
	}
	slices.Sort(t.Dirs)
	if p.errs.err() != nil {
		return nil, &LoadError{Errors: p.errs, Files: t.Files, Dirs: t.Dirs}
	}
	t.keys = &p.keys
	return t, nil
}

var yamlLineRE = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

var bracketKeyRE = regexp.MustCompile(`(?m)^[ \t]*\[[^\]\n]*\](:[^ \t\n]*)?:[ \t]`)

// tabIndentRE matches a line indented with a tab.
var tabIndentRE = regexp.MustCompile(`(?m)^ *\t`)

// yamlError turns a go-yaml error into file:line: message. An unquoted
// "[host]:port" key is the classic mistake in this table (YAML reads "[" as
// the start of a list): the message then says how to write it.
//
// go-yaml gives the line where the construct it was reading began (a
// mapping, often the section's first line), not the line at fault. For
// the two mistakes it can be told from the text, an unquoted "[" key and
// a tab in the indentation, the error names the first such line from
// there on instead.
func (p *parser) yamlError(file string, err error, data []byte) {
	msg := err.Error()
	hint := ""
	var culprit *regexp.Regexp
	if bracketKeyRE.Match(data) {
		hint = ` (keys that start with "[" must be quoted: "[host]:port": policy)`
		culprit = bracketKeyRE
	}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if strings.Contains(m[2], "tab character") {
			culprit = tabIndentRE
		}
		if culprit != nil {
			line = lineOf(data, culprit, line)
		}
		p.errorf(Source{File: file, Line: line}, "YAML syntax: %s%s", m[2], hint)
		return
	}
	p.errorf(Source{File: file}, "YAML syntax: %s%s", strings.TrimPrefix(msg, "yaml: "), hint)
}

// lineOf returns the 1-based number of the first line at or after line
// that re matches, or line if none does.
func lineOf(data []byte, re *regexp.Regexp, line int) int {
	start := 0
	for n := 1; n < line; n++ {
		i := bytes.IndexByte(data[start:], '\n')
		if i < 0 {
			return line
		}
		start += i + 1
	}
	loc := re.FindIndex(data[start:])
	if loc == nil {
		return line
	}
	return line + bytes.Count(data[start:start+loc[0]], []byte{'\n'})
}

// decode runs the YAML decoder; a panic inside it (the table is rejected,
// the daemon keeps running) is reported as an error.
func decode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	return dec.Decode(n)
}

func (p *parser) parseYAML(file string, data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := decode(dec, &doc); err != nil {
		if err != io.EOF {
			p.yamlError(file, err, data)
		}
		return
	}
	var extra yaml.Node
	if err := decode(dec, &extra); err != io.EOF {
		if err != nil {
			p.yamlError(file, err, data)
			return
		}
		p.errorf(Source{File: file, Line: extra.Line}, "more than one YAML document (\"---\"): put each in its own file")
		return
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return
		}
		root = root.Content[0]
	}
	if isNull(root) {
		return
	}
	if !p.isKind(file, root, yaml.MappingNode, "the table: want a mapping of sections (defaults, outbound, recipients, senders, inbound, include)") {
		return
	}
	seen := map[string]Source{}
	p.eachField(file, root, seen, "section", func(name string, k, v *yaml.Node) {
		switch name {
		case "defaults":
			if !p.deferSection(evDefaults, v) {
				p.defaults(file, v)
			}
		case "outbound":
			p.entries(file, v, sectionOutbound)
		case "recipients":
			p.entries(file, v, sectionRecipients)
		case "senders":
			p.entries(file, v, sectionSenders)
		case "inbound":
			if !p.deferSection(evInbound, v) {
				p.inbound(file, v)
			}
		case "include":
			if !p.deferSection(evInclude, v) {
				p.include(file, v)
			}
		default:
			p.errorf(src(file, k), "unknown section %q (want defaults, outbound, recipients, senders, inbound, include)", name)
		}
	})
}

// deferSection records a section that depends on other files as an event
// of a deferred parser (loadFiles); it reports whether it did.
func (p *parser) deferSection(kind eventKind, v *yaml.Node) bool {
	if p.deferred {
		p.events = append(p.events, event{kind: kind, node: v})
	}
	return p.deferred
}

func src(file string, n *yaml.Node) Source { return Source{File: file, Line: n.Line} }

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// isKind reports whether n is of kind want; if not it records "what" as
// an error. Aliases are rejected everywhere: expanding them could make a
// small file expensive to load, and a policy table gains nothing by them.
func (p *parser) isKind(file string, n *yaml.Node, want yaml.Kind, what string) bool {
	if n.Kind == yaml.AliasNode {
		p.errorf(src(file, n), "YAML aliases (*%s) are not supported in the policy table", n.Value)
		return false
	}
	if n.Kind != want {
		p.errorf(src(file, n), "%s", what)
		return false
	}
	return true
}

// eachField calls fn for every key/value of mapping m, reporting keys that
// are not strings and keys repeated within m (go-yaml's Node decoding does
// not). kind names the keys in messages ("section", "field").
func (p *parser) eachField(file string, m *yaml.Node, seen map[string]Source, kind string, fn func(name string, k, v *yaml.Node)) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if !p.isKind(file, k, yaml.ScalarNode, kind+" name must be a string") {
			continue
		}
		if k.Value == "<<" && k.Tag == "!!merge" {
			p.errorf(src(file, k), "YAML merge keys (<<) are not supported in the policy table")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(src(file, k), "duplicate %s %q (first at %s)", kind, k.Value, first)
			continue
		}
		seen[k.Value] = src(file, k)
		fn(k.Value, k, v)
	}
}

// scalar returns the string value of a scalar node, or records an error.
func (p *parser) scalar(file string, n *yaml.Node, what string) (string, bool) {
	if !p.isKind(file, n, yaml.ScalarNode, what+": want a string") {
		return "", false
	}
	return n.Value, true
}

func (p *parser) boolean(file string, n *yaml.Node, what string) (bool, bool) {
	if n.Kind == yaml.ScalarNode {
		switch n.Value {
		case "true", "True", "TRUE":
			return true, true
		case "false", "False", "FALSE":
			return false, true
		}
	}
	p.errorf(src(file, n), "%s: want true or false", what)
	return false, false
}

func (p *parser) defaults(file string, v *yaml.Node) {
	if isNull(v) {
		return
	}
	if !p.isKind(file, v, yaml.MappingNode, "defaults: want a mapping (outbound, learn, learn_max_age, inbound_action)") {
		return
	}
	d := &p.t.Defaults
	p.eachField(file, v, map[string]Source{}, "field", func(name string, k, v *yaml.Node) {
		switch name {
		case "outbound", "learn", "learn_max_age", "inbound_action":
		default:
			p.errorf(src(file, k), "unknown field %q in defaults (want outbound, learn, learn_max_age, inbound_action)", name)
			return
		}
		if first, dup := p.defSeen[name]; dup {
			p.errorf(src(file, k), "duplicate setting \"defaults.%s\" (first at %s)", name, first)
			return
		}
		p.defSeen[name] = src(file, k)
		if name == "outbound" && isNull(v) {
			d.OutboundSource = src(file, v)
			return
		}
		s, ok := p.scalar(file, v, "defaults."+name)
		if !ok {
			return
		}
		switch name {
		case "outbound":
			d.OutboundSource = src(file, v)
			if strings.TrimSpace(s) == "" {
				return // NOTFOUND: Postfix's own smtp_tls_security_level applies
			}
			pol, err := ParsePolicy(s)
			if err != nil {
				p.errorf(src(file, v), "defaults.outbound: %v", err)
				return
			}
			d.Outbound = pol
		case "learn":
			switch s {
			case LearnOff, LearnReport, LearnEnforce:
				d.Learn = s
			default:
				p.errorf(src(file, v), "defaults.learn: %q is not off, report or enforce", s)
			}
		case "learn_max_age":
			dur, err := time.ParseDuration(s)
			if err != nil || dur <= 0 {
				p.errorf(src(file, v), "defaults.learn_max_age: %q is not a positive duration (e.g. 720h)", s)
				return
			}
			d.LearnMaxAge = dur
		case "inbound_action":
			switch s {
			case ActionDefer, ActionReject:
				d.InboundAction = s
			default:
				p.errorf(src(file, v), "defaults.inbound_action: %q is not defer or reject", s)
			}
		}
	})
}

// entries parses the outbound, recipients or senders section.
func (p *parser) entries(file string, v *yaml.Node, sec uint8) {
	section := sectionNames[sec]
	if isNull(v) {
		return
	}
	if !p.isKind(file, v, yaml.MappingNode, section+": want a mapping of keys to policies") {
		return
	}
	p.reserve(sec, len(v.Content)/2)
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if k.Kind == yaml.SequenceNode || k.Kind == yaml.MappingNode {
			p.errorf(src(file, k), "%s: key must be a string; quote keys that start with \"[\" (\"[host]:port\": …)", section)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			p.scalar(file, k, section+" key") // the error
			continue
		}
		key := NormalizeKey(k.Value)
		var err error
		if sec == sectionOutbound {
			err = checkOutboundKey(key)
		} else {
			err = checkAddressKey(key)
		}
		if err != nil {
			p.errorf(src(file, k), "%v", err)
		}
		e := p.entry(file, sec, key, k, val)
		if err != nil || e == nil {
			continue
		}
		p.add(sec, e)
	}
}

// sectionList returns the list of entries of a section.
func (p *parser) sectionList(sec uint8) *[]*Entry {
	return [...]*[]*Entry{sectionOutbound: &p.t.Outbound, sectionRecipients: &p.t.Recipients, sectionSenders: &p.t.Senders}[sec]
}

// reserve makes room for n more entries of a section (appending a
// million entries one by one was 6 % of a load, most of it copying).
func (p *parser) reserve(sec uint8, n int) {
	if p.deferred {
		p.events = slices.Grow(p.events, n)
		return
	}
	list := p.sectionList(sec)
	*list = slices.Grow(*list, n)
	// While loadFiles replays, room for the files still to come too, at
	// the rate of entries per byte so far and an eighth more: the index
	// is then sized once instead of at every file. Each resize writes a
	// new, larger table of fresh pages: 0.84 s of CPU (first-touch page
	// faults, mostly) in two loads of the 1,000,000-entry bench table in
	// 5 files. An index reserved too large is trimmed at the end.
	ahead := int(float64(len(*list)+n) * p.ahead * 9 / 8)
	p.keys.idx[sec].reserve(len(*list) + n + ahead)
}

// add records e in its section, unless its key is already defined.
func (p *parser) add(sec uint8, e *Entry) {
	if p.deferred {
		p.events = append(p.events, event{kind: evEntry, e: e, section: sec})
		return
	}
	list := p.sectionList(sec)
	*list = append(*list, e)
	if first := p.keys.idx[sec].insert(*list, len(*list)-1); first >= 0 {
		*list = (*list)[:len(*list)-1]
		p.errorf(e.Source, "duplicate key %q (first at %s)", e.Key, (*list)[first].Source)
		return
	}
	p.keys.sum[sec] = listSum(p.keys.sum[sec], e)
}

// entry parses the value of one entry: a policy string, or the long form
// {policy, testing, note, review_by}.
func (p *parser) entry(file string, sec uint8, key string, k, v *yaml.Node) *Entry {
	section := sectionNames[sec]
	e := &Entry{Key: key, Source: src(file, k)}
	var polNode *yaml.Node
	switch {
	case v.Kind == yaml.AliasNode:
		p.isKind(file, v, yaml.ScalarNode, "")
		return nil
	case isNull(v):
		p.errorf(src(file, v), "%s: no policy", key)
		return nil
	case v.Kind == yaml.ScalarNode:
		polNode = v
	case v.Kind == yaml.MappingNode:
		ok := true
		p.eachField(file, v, map[string]Source{}, "field", func(name string, fk, fv *yaml.Node) {
			switch name {
			case "policy":
				polNode = fv
			case "testing":
				b, good := p.boolean(file, fv, key+": testing")
				e.Testing = b
				ok = ok && good
			case "note":
				s, good := p.scalar(file, fv, key+": note")
				e.Note = s
				ok = ok && good
			case "review_by":
				s, good := p.scalar(file, fv, key+": review_by")
				if !good {
					ok = false
					return
				}
				t, err := time.Parse(time.DateOnly, s)
				if err != nil {
					p.errorf(src(file, fv), "%s: review_by %q is not a date (YYYY-MM-DD)", key, s)
					ok = false
					return
				}
				e.ReviewBy = t
			default:
				p.errorf(src(file, fk), "unknown field %q in %s entry %q (want policy, testing, note, review_by)", name, section, key)
				ok = false
			}
		})
		if polNode == nil {
			p.errorf(src(file, k), "%s: no policy (the long form needs policy: …)", key)
			return nil
		}
		if !ok {
			return nil
		}
	default:
		p.errorf(src(file, v), "%s: want a policy string or a mapping with policy, testing, note, review_by", key)
		return nil
	}
	if isNull(polNode) {
		p.errorf(src(file, polNode), "%s: no policy", key)
		return nil
	}
	if polNode.Kind != yaml.ScalarNode {
		p.scalar(file, polNode, key+": policy") // the error
		return nil
	}
	pol, err := p.policy(polNode.Value)
	if err != nil {
		p.errorf(src(file, polNode), "%s: %v", key, err)
		return nil
	}
	if sec != sectionOutbound {
		if err := checkTransportPolicy(section, pol); err != nil {
			p.errorf(src(file, polNode), "%s: %v", key, err)
			return nil
		}
	}
	e.Policy = pol
	return e
}

// checkTransportPolicy checks a recipients or senders policy: it only
// selects one of the transports tlspolicyd-encrypt:, -verify:, -secure:
// (examples/postfix/master.cf), whose smtp_tls_policy_maps is
// tls_policy_<level>; attributes would be silently lost.
func checkTransportPolicy(section string, pol *Policy) error {
	switch pol.Level {
	case LevelEncrypt, LevelVerify, LevelSecure:
	default:
		return fmt.Errorf("level %s has no transport: %s entries select the transport tlspolicyd-encrypt:, tlspolicyd-verify: or tlspolicyd-secure:, so the level must be encrypt, verify or secure", pol.Level, section)
	}
	if len(pol.Attrs) > 0 {
		return fmt.Errorf("attributes are not supported in %s (the entry only selects the transport tlspolicyd-%s:, whose TLS policy comes from map tls_policy_%s): put %s=%s on an outbound entry", section, pol.Level, pol.Level, pol.Attrs[0].Name, pol.Attrs[0].Value)
	}
	return nil
}

func (p *parser) inbound(file string, v *yaml.Node) {
	if isNull(v) {
		return
	}
	if !p.isKind(file, v, yaml.SequenceNode, "inbound: want a list of rules (- name: …)") {
		return
	}
	for _, item := range v.Content {
		if !p.isKind(file, item, yaml.MappingNode, "inbound rule: want a mapping (name, from, to, client, require, fingerprints, action, testing, header)") {
			continue
		}
		p.rule(file, item)
	}
}

func (p *parser) rule(file string, m *yaml.Node) {
	r := &InboundRule{Source: src(file, m)}
	ok := true
	bad := func() { ok = false }
	var nameNode, fpNode, headerNode *yaml.Node
	lbl := ""
	label := func() string { // r.Name is set before the first call and then kept
		if lbl == "" {
			lbl = "inbound rule"
			if r.Name != "" {
				lbl = fmt.Sprintf("inbound rule %q", r.Name)
			}
		}
		return lbl
	}
	// The name first, so that every message can name the rule.
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == "name" {
			nameNode = m.Content[i+1]
			if nameNode.Kind == yaml.ScalarNode && !isNull(nameNode) {
				r.Name = nameNode.Value
			}
			break
		}
	}
	p.eachField(file, m, map[string]Source{}, "field", func(name string, k, v *yaml.Node) {
		switch name {
		case "name":
			s, good := p.scalar(file, v, "inbound rule name")
			if !good {
				bad()
				return
			}
			if strings.TrimSpace(s) == "" || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
				p.errorf(src(file, v), "inbound rule name %q: want a non-empty name without control characters", s)
				bad()
			}
		case "from", "to", "client":
			vals, good := p.list(file, v, label(), name)
			if !good {
				bad()
				return
			}
			for _, vn := range vals {
				norm, err := normalizeSelector(name, vn.Value)
				if err != nil {
					p.errorf(src(file, vn), "%s: %s: %v", label(), name, err)
					bad()
					continue
				}
				switch name {
				case "from":
					r.From = append(r.From, norm)
				case "to":
					r.To = append(r.To, norm)
				default:
					r.Client = append(r.Client, norm)
				}
			}
		case "require":
			s, good := p.scalar(file, v, label()+": require")
			if !good {
				bad()
				return
			}
			switch s {
			case RequireTLS, RequireTLS12, RequireTLS13, RequireCert, RequireFingerprint:
				r.Require = s
			default:
				p.errorf(src(file, v), "%s: require %q is not tls, tls1.2, tls1.3, cert or fingerprint", label(), s)
				bad()
			}
		case "fingerprints":
			fpNode = k
			vals, good := p.list(file, v, label(), name)
			if !good {
				bad()
				return
			}
			for _, vn := range vals {
				fp, err := normalizeFingerprint(vn.Value)
				if err != nil {
					p.errorf(src(file, vn), "%s: fingerprint %q: %v", label(), vn.Value, err)
					bad()
					continue
				}
				r.Fingerprints = append(r.Fingerprints, fp)
			}
		case "action":
			s, good := p.scalar(file, v, label()+": action")
			if !good {
				bad()
				return
			}
			if s != ActionDefer && s != ActionReject {
				p.errorf(src(file, v), "%s: action %q is not defer or reject", label(), s)
				bad()
				return
			}
			r.Action = s
		case "testing":
			b, good := p.boolean(file, v, label()+": testing")
			r.Testing = b
			if !good {
				bad()
			}
		case "header":
			headerNode = k
			s, good := p.scalar(file, v, label()+": header")
			if !good {
				bad()
				return
			}
			if err := checkHeaderName(s); err != nil {
				p.errorf(src(file, v), "%s: header %q: %v", label(), s, err)
				bad()
				return
			}
			r.Header = s
		default:
			p.errorf(src(file, k), "unknown field %q in %s (want name, from, to, client, require, fingerprints, action, testing, header)", name, label())
			bad()
		}
	})
	if nameNode == nil {
		p.errorf(r.Source, "inbound rule has no name")
		return
	}
	if r.Name != "" {
		if first, dup := p.ruleSeen[r.Name]; dup {
			p.errorf(src(file, nameNode), "duplicate inbound rule %q (first at %s)", r.Name, first)
			bad()
		} else {
			p.ruleSeen[r.Name] = src(file, nameNode)
		}
	}
	if !ok {
		return
	}
	if len(r.From) == 0 && len(r.To) == 0 && len(r.Client) == 0 {
		p.errorf(r.Source, "%s has no from, to or client: it would apply to all mail (to require TLS from every client use Postfix's smtpd_tls_security_level instead)", label())
		return
	}
	if r.Require == "" {
		p.errorf(r.Source, "%s has no require (want tls, tls1.2, tls1.3, cert or fingerprint)", label())
		return
	}
	if r.Require == RequireFingerprint && len(r.Fingerprints) == 0 {
		p.errorf(r.Source, "%s: require fingerprint needs fingerprints: [\"AB:CD:…\"]", label())
		return
	}
	if r.Require != RequireFingerprint && fpNode != nil {
		p.errorf(src(file, fpNode), "%s: fingerprints are only used with require: fingerprint", label())
		return
	}
	if r.Header != "" && !r.Testing {
		p.errorf(src(file, headerNode), "%s: header is only used with testing: true", label())
		return
	}
	p.t.Inbound = append(p.t.Inbound, r)
}

// list returns the scalar items of a sequence (a single scalar counts as a
// one-item list).
func (p *parser) list(file string, v *yaml.Node, label, field string) ([]*yaml.Node, bool) {
	if v.Kind == yaml.ScalarNode && !isNull(v) {
		return []*yaml.Node{v}, true
	}
	if !p.isKind(file, v, yaml.SequenceNode, label+": "+field+": want a list") {
		return nil, false
	}
	if len(v.Content) == 0 {
		p.errorf(src(file, v), "%s: %s: empty list", label, field)
		return nil, false
	}
	ok := true
	for _, it := range v.Content {
		if !p.isKind(file, it, yaml.ScalarNode, label+": "+field+": want a list of strings") || isNull(it) {
			if isNull(it) {
				p.errorf(src(file, it), "%s: %s: empty item", label, field)
			}
			ok = false
		}
	}
	return v.Content, ok
}

// normalizeSelector validates and normalizes one from, to or client item.
func normalizeSelector(field, s string) (string, error) {
	switch field {
	case "from", "to":
		if field == "from" && s == "<>" {
			return s, nil
		}
		k := NormalizeKey(s)
		if err := checkAddressKey(k); err != nil {
			if field == "from" && s == "" {
				return "", errors.New(`empty sender: write "<>" for the null sender`)
			}
			return "", err
		}
		return k, nil
	}
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return "", fmt.Errorf("%q is not a CIDR prefix", s)
		}
		if pfx != pfx.Masked() {
			return "", fmt.Errorf("%q has host bits set (did you mean %s?)", s, pfx.Masked())
		}
		if a := pfx.Addr(); a.Is4In6() {
			// Postfix's client_address is matched as IPv4 (an IPv4-mapped
			// address is unmapped), so the prefix must be IPv4 too, or it
			// would never match. Masked and mapped, it is /96 or longer.
			return netip.PrefixFrom(a.Unmap(), pfx.Bits()-96).String(), nil
		}
		return pfx.String(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return "", fmt.Errorf("%q: IPv6 zones are not supported", s)
		}
		return a.Unmap().String(), nil
	}
	k := NormalizeKey(s)
	if err := checkHostname(strings.TrimPrefix(k, ".")); err != nil {
		return "", fmt.Errorf("%q is not an IP address, CIDR prefix, host name or .domain: %v", s, err)
	}
	return k, nil
}

// normalizeFingerprint returns fp as Postfix writes ccert_fingerprint:
// upper-case hex, a colon between bytes.
func normalizeFingerprint(fp string) (string, error) {
	if _, err := decodeFingerprint(fp); err != nil {
		return "", err
	}
	hex := strings.ToUpper(strings.ReplaceAll(fp, ":", ""))
	var b strings.Builder
	for i := 0; i < len(hex); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(hex[i : i+2])
	}
	return b.String(), nil
}

// checkHeaderName validates a header field name (RFC 5322 §3.6.8).
func checkHeaderName(s string) error {
	if s == "" {
		return errors.New("empty header name")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 33 || c > 126 || c == ':' {
			return fmt.Errorf("invalid character %q in a header name", c)
		}
	}
	return nil
}

func (p *parser) include(file string, v *yaml.Node) {
	if isNull(v) {
		return
	}
	if !p.isKind(file, v, yaml.SequenceNode, "include: want a list (- postfix: path)") {
		return
	}
	for _, item := range v.Content {
		if !p.isKind(file, item, yaml.MappingNode, "include: want \"- postfix: path\"") {
			continue
		}
		p.eachField(file, item, map[string]Source{}, "field", func(name string, k, val *yaml.Node) {
			if name != "postfix" {
				p.errorf(src(file, k), "unknown include type %q (want postfix: path)", name)
				return
			}
			rel, ok := p.scalar(file, val, "include postfix")
			if !ok {
				return
			}
			if rel == "" || isNull(val) {
				p.errorf(src(file, val), "include postfix: empty path")
				return
			}
			path := rel
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(file), rel)
			}
			abs := absPath(path)
			if first, dup := p.incSeen[abs]; dup {
				p.errorf(src(file, val), "%s is already included (first at %s)", rel, first)
				return
			}
			p.incSeen[abs] = src(file, val)
			p.addFile(path)
			data, err := readRegular(path)
			if err != nil {
				p.errorf(src(file, val), "include %s: %v", rel, err)
				return
			}
			p.parsePostfix(path, data)
		})
	}
}
