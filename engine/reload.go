package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/tlspolicyd/tlspolicyd/store"
)

// Reloader loads the policy table at Path into Engine and reloads it when a
// file of the table changes (fsnotify) or when Reload is called (SIGHUP).
//
// It watches directories, not files: editors and `git checkout` replace a
// file by renaming a new one over it, which a watch on the file itself
// would miss. Events are debounced so that a checkout touching many files
// causes one reload: a table is swapped in only once no change has been
// seen for Debounce, and it was read after the last change. A table is
// parsed, validated and built completely before it is swapped in; a failed
// reload keeps the old table serving.
type Reloader struct {
	Path     string
	Engine   *Engine
	Debounce time.Duration // default 200ms
	Logger   *slog.Logger
	// OnReload, if set, is called after every reload attempt with its
	// error (nil on success), e.g. for metrics and events.
	OnReload func(err error)

	mu         sync.Mutex // serialises loads and swaps
	loadSeq    uint64     // loads started (under mu)
	appliedSeq uint64     // the latest load swapped in or reported (under mu)
	// failed is the latest applied load's error when it failed, else nil:
	// the files and directories it read are watched too, so that creating
	// an include it could not find reloads the table.
	failed atomic.Pointer[store.LoadError]

	relMu        sync.Mutex
	relRunning   bool           // a release goroutine is running
	relPending   bool           // another load finished since it started
	relWG        sync.WaitGroup // the release goroutine (tests wait for it)
	releaseAbove uint64         // tests: releaseAbove if 0
}

func (r *Reloader) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.Default()
	}
	return r.Logger
}

// Reload loads the table now. On success the new table serves every later
// lookup; on failure the old table stays and every error is logged with
// its file:line.
func (r *Reloader) Reload() error {
	return r.ReloadContext(context.Background())
}

// ReloadContext is Reload, abandoned (between files) when ctx is done:
// it then returns ctx's error and changes nothing.
func (r *Reloader) ReloadContext(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.loadLocked(ctx)
	if err := ctx.Err(); err != nil {
		return err
	}
	return r.applyLocked(l)
}

// loaded is the outcome of one load of the table.
type loaded struct {
	seq  uint64 // order of the load's start
	s    *store.Store
	err  error
	took time.Duration
}

// load loads the table without swapping it in (see Run); ctx abandons it.
func (r *Reloader) load(ctx context.Context) loaded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loadLocked(ctx)
}

func (r *Reloader) loadLocked(ctx context.Context) loaded {
	r.loadSeq++
	l := loaded{seq: r.loadSeq}
	start := time.Now()
	l.s, l.err = store.LoadContext(ctx, r.Path)
	l.took = time.Since(start)
	return l
}

// apply swaps in a load (or reports its errors), unless a load started
// after it was applied already.
func (r *Reloader) apply(l loaded) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applyLocked(l)
}

func (r *Reloader) applyLocked(l loaded) error {
	if l.seq <= r.appliedSeq {
		return nil // outdated by a later load (Reload during Run's wait)
	}
	r.appliedSeq = l.seq
	defer r.release()
	if l.err == nil {
		l.err = r.refuseEmpty(l.s.Table())
	}
	r.failed.Store(nil)
	if err := l.err; err != nil {
		var le *store.LoadError
		if errors.As(err, &le) {
			r.failed.Store(le)
		}
		msg := "policy table rejected, old table keeps serving"
		if r.Engine.Store() == nil {
			msg = "policy table rejected, no table loaded: requests fail closed"
		}
		log := r.logger()
		var list store.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				log.Error(msg, "error", e.Error(), "file", e.File, "line", e.Line)
			}
		} else {
			log.Error(msg, "error", err)
		}
		if r.OnReload != nil {
			r.OnReload(err)
		}
		return err
	}
	r.Engine.Swap(l.s)
	t := l.s.Table()
	if t.Empty() {
		r.logger().Warn("policy table is empty: it changes no answer", "path", r.Path)
	}
	r.logger().Info("policy table loaded", "path", r.Path, "files", len(t.Files),
		"outbound", len(t.Outbound), "recipients", len(t.Recipients), "senders", len(t.Senders),
		"inbound", len(t.Inbound), "took", l.took.Round(time.Microsecond))
	if r.OnReload != nil {
		r.OnReload(nil)
	}
	return nil
}

// refuseEmpty returns an error when t is empty and would replace a table
// that is not (a truncated file, an emptied checkout), unless t says
// defaults.allow_empty: true.
func (r *Reloader) refuseEmpty(t *store.Table) error {
	old := r.Engine.Store()
	if !t.Empty() || t.Defaults.AllowEmpty || old == nil || old.Table().Empty() {
		return nil
	}
	return &store.LoadError{Files: t.Files, Dirs: t.Dirs, Errors: store.ErrorList{{Source: store.Source{File: r.Path},
		Msg: "the new table is empty (no entries, no inbound rules, no defaults.outbound): not loaded; set defaults.allow_empty: true to load an empty table"}}}
}

// releaseAbove is the heap size above which release returns memory.
const releaseAbove = 256 << 20

// release returns the memory a load no longer needs to the operating
// system, in the background: the YAML nodes of the parse (0.9 GB
// allocated in all for a 1,000,000-entry table, 130 MB for 100,000) and,
// after a reload, the previous table once no lookup uses it. A failed
// load leaves the same garbage, so it is released too.
//
// Without it the Go runtime keeps that memory: its next collection is due
// only when the heap has doubled since the last one, and its scavenger
// returns only what exceeds that goal, so a daemon that had loaded a
// 1,000,000-entry table (140 MB live) stayed at ≈ 520 MB resident; with
// it, ≈ 200 MB. debug.FreeOSMemory (a collection, then returning every
// free page) takes ≈ 0.2 s for that table: it runs after the new table
// answers and after Reload returns, so it delays neither a reload nor the
// daemon's start.
//
// Returning memory is not free, though: the next load faults it back in.
// On the 2-core VM of the benchmarks that costs ≈ 15 µs per 4 KB page, and
// releasing after every load doubled the CPU time of reloading a
// 100,000-entry table (330 → 700 ms: ≈ 90 MB faulted in again). So memory
// is returned only when the heap the process holds (in use or free, not
// yet returned) is above releaseAbove (256 MB): after loading 1,000,000
// entries it was ≈ 500 MB (≈ 220 MB after the release), after 100,000
// 90–135 MB, which the next reload reuses. One release runs at a time; a load that finishes meanwhile gets
// one more run.
func (r *Reloader) release() {
	r.relMu.Lock()
	defer r.relMu.Unlock()
	if r.relRunning {
		r.relPending = true
		return
	}
	r.relRunning = true
	r.relWG.Add(1)
	go func() {
		defer r.relWG.Done()
		for {
			above := uint64(releaseAbove)
			if r.releaseAbove != 0 {
				above = r.releaseAbove
			}
			if held := heapHeld(); held <= above {
				r.logger().Debug("memory of the policy table load kept for the next load", "heap_held_mb", held>>20)
			} else {
				start := time.Now()
				debug.FreeOSMemory()
				r.logger().Debug("memory of the policy table load returned to the OS", "took", time.Since(start).Round(time.Millisecond),
					"heap_held_mb", held>>20, "heap_held_now_mb", heapHeld()>>20)
			}
			r.relMu.Lock()
			again := r.relPending
			r.relPending, r.relRunning = false, again
			r.relMu.Unlock()
			if !again {
				return
			}
		}
	}()
}

// heapHeld returns the heap memory the process holds: objects (live or
// garbage), the unused rest of their spans, and free pages the runtime
// has not returned to the operating system.
func heapHeld() uint64 {
	m := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	metrics.Read(m)
	var n uint64
	for _, s := range m {
		if s.Value.Kind() != metrics.KindUint64 {
			return math.MaxUint64 // unknown: release
		}
		n += s.Value.Uint64()
	}
	return n
}

// Run watches the table's directories until ctx is done, reloading after
// each burst of relevant changes. It returns nil when ctx is cancelled.
func (r *Reloader) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policy table: %w", err)
	}
	defer w.Close()
	debounce := r.Debounce
	if debounce <= 0 {
		debounce = 200 * time.Millisecond
	}
	ws, err := r.currentWatchSet()
	if err != nil {
		return err
	}
	watched := map[string]bool{}
	sync := func() {
		for d := range ws.dirs {
			if !watched[d] {
				if resolveDir(d) != d {
					// A link that dangled when the set was computed and
					// leads to a directory now: watching it would put a
					// second name on that inode's one inotify watch, and
					// removing this name later would remove the watch.
					// The set computed after the next event has the target.
					continue
				}
				if err := w.Add(d); err != nil {
					if d == ws.root && errors.Is(err, fs.ErrNotExist) {
						// Replaced by rename, the new one not there yet:
						// watched when it comes (an event in its parent).
						continue
					}
					r.logger().Warn("cannot watch directory; changes there need SIGHUP", "dir", d, "error", err)
					continue
				}
				watched[d] = true
			}
		}
		for d := range watched {
			if !ws.dirs[d] {
				_ = w.Remove(d)
				delete(watched, d)
			}
		}
	}
	sync()

	// The first change of a burst starts a load at once, so that parsing
	// overlaps the debounce wait: the new table answers max(Debounce,
	// load time) after a rename instead of their sum. A load is swapped
	// in only when no change has come for Debounce and none came after it
	// started (it read the files as they are now); otherwise it is
	// dropped — abandoned between files as soon as a change comes — and
	// the load that counts starts when the quiet period ends, as without
	// this. One load at a time, at most one early load per burst: a long
	// burst (a large file copied in) does not parse again and again.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	results := make(chan loaded, 1)
	var (
		running bool    // a load runs
		stale   bool    // a change came after the running load started
		ready   *loaded // a finished load no change has outdated, not applied yet
		quiet   bool    // no change for Debounce
		early   bool    // this burst has had its early load
	)
	abandon := func() {} // cancels the running load
	defer func() { abandon() }()
	start := func() {
		running, stale = true, false
		lctx, cancel := context.WithCancel(ctx)
		abandon = cancel
		go func() { results <- r.load(lctx) }()
	}
	apply := func(l loaded) {
		_ = r.apply(l) // errors are logged; the old table keeps serving
		if nws, err := r.currentWatchSet(); err == nil {
			ws = nws
			sync()
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			name := filepath.Clean(ev.Name)
			if ev.Op == fsnotify.Chmod || !ws.relevant(name) {
				continue
			}
			if watched[name] {
				// A watched directory (the table directory) was replaced,
				// removed or created: the watch is on the old one.
				_ = w.Remove(name)
				delete(watched, name)
			}
			// The change may have re-pointed a link: resolve anew.
			if nws, err := r.currentWatchSet(); err == nil {
				ws = nws
			}
			sync()
			r.logger().Debug("policy table change", "file", ev.Name, "op", ev.Op.String())
			timer.Reset(debounce)
			quiet, ready = false, nil
			switch {
			case running:
				stale = true
				abandon()
			case !early:
				early = true
				start()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.logger().Warn("watching policy table", "error", err)
		case l := <-results:
			running = false
			abandon()
			if ctx.Err() != nil {
				return nil // shutting down: the load may have been abandoned
			}
			switch {
			case stale && quiet:
				start() // the changes ended while it ran: load them now
			case stale:
				// dropped; the timer starts the load that counts
			case quiet:
				apply(l)
			default:
				ready = &l
			}
		case <-timer.C:
			quiet, early = true, false
			switch {
			case ready != nil:
				apply(*ready)
				ready = nil
			case !running:
				start()
			}
			// Running: applied, or restarted if stale, when it ends.
		}
	}
}
