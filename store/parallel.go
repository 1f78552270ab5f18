package store

import (
	"context"
	"os"

	"go.yaml.in/yaml/v3"
)

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
					results[i].events = parseDeferred(name, p.budget)
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
func parseDeferred(name string, b *budget) []event {
	w := newParser()
	w.budget = b
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
