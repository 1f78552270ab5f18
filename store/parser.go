package store

import (
	"fmt"
	"path/filepath"
	"slices"
)

// parser collects a table and every error found while reading it.
type parser struct {
	t        *Table
	errs     ErrorList
	keys     listKeys          // of t.Outbound, t.Recipients, t.Senders
	ruleSeen map[string]Source // inbound rule name -> first definition
	defSeen  map[string]Source // defaults field -> first setting
	incSeen  map[string]Source // absolute include path -> first include
	included map[string]bool   // included files, by the name their entries carry
	files    map[string]bool
	dirs     map[string]bool
	// pols interns policies by the text as written: a table has few
	// distinct policies, each parsed once and shared by its entries.
	pols  map[string]parsedPolicy
	canon map[*Policy]*Policy // a worker's policy -> the table's (replay)

	// deferred: a worker of loadFiles, which records errors, entries and
	// the sections that depend on other files as events instead.
	deferred bool
	events   []event
	// budget bounds the YAML nodes of the whole load; root is the table
	// path, where exceeding it is reported.
	budget *budget
	root   string
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
		included: map[string]bool{},
		files:    map[string]bool{},
		dirs:     map[string]bool{},
		pols:     map[string]parsedPolicy{},
		canon:    map[*Policy]*Policy{},
		budget:   &budget{},
	}
}

func (p *parser) errorf(src Source, format string, args ...any) {
	err := &Error{Source: src, Msg: fmt.Sprintf(format, clipArgs(format, args)...)}
	if p.deferred {
		p.events = append(p.events, event{kind: evError, err: err})
		return
	}
	p.errs = append(p.errs, err)
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
	if p.budget.exceeded.Load() {
		// The only error: which files were decoded before the budget ran
		// out depends on the order parallel workers took it.
		p.errs = ErrorList{{Source: Source{File: p.root}, Msg: fmt.Sprintf(
			"table too large: its files would decode to more than %d YAML nodes, the bound of one load (a table of 1,000,000 short entries is about 4,400,000)", maxLoadNodes)}}
	}
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
	t.root = p.root
	return t, nil
}
