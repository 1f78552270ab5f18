package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
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
// causes one reload. A table is parsed, validated and built completely
// before it is swapped in; a failed reload keeps the old table serving.
type Reloader struct {
	Path     string
	Engine   *Engine
	Debounce time.Duration // default 200ms
	Logger   *slog.Logger
	// OnReload, if set, is called after every reload attempt with its
	// error (nil on success), e.g. for metrics and events.
	OnReload func(err error)

	mu sync.Mutex // serialises reloads

	relMu      sync.Mutex
	relRunning bool           // a release goroutine is running
	relPending bool           // another load finished since it started
	relWG      sync.WaitGroup // the release goroutine (tests wait for it)
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
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	s, err := store.Load(r.Path)
	if err != nil {
		log := r.logger()
		var list store.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				log.Error("policy table rejected, old table keeps serving", "error", e.Error(), "file", e.File, "line", e.Line)
			}
		} else {
			log.Error("policy table rejected, old table keeps serving", "error", err)
		}
		if r.OnReload != nil {
			r.OnReload(err)
		}
		r.release()
		return err
	}
	r.Engine.Swap(s)
	t := s.Table()
	r.logger().Info("policy table loaded", "path", r.Path, "files", len(t.Files),
		"outbound", len(t.Outbound), "recipients", len(t.Recipients), "senders", len(t.Senders),
		"inbound", len(t.Inbound), "took", time.Since(start).Round(time.Microsecond))
	if r.OnReload != nil {
		r.OnReload(nil)
	}
	r.release()
	return nil
}

// release returns the memory a load no longer needs to the operating
// system, in the background: the YAML nodes of the parse (1.3 GB
// allocated in all for a 1,000,000-entry table, 150 MB for 100,000) and,
// after a reload, the previous table once no lookup uses it. A failed
// load leaves the same garbage, so it is released too.
//
// Without it the Go runtime keeps that memory: its next collection is due
// only when the heap has doubled since the last one, and its scavenger
// returns only what exceeds that goal, so a daemon that had loaded a
// 1,000,000-entry table (204 MB live) stayed at ≈ 520 MB resident; with
// it, ≈ 250 MB. debug.FreeOSMemory (a collection, then returning every
// free page) took 0.6 s for that table and 35 ms for 100,000 entries
// (2-core VM): it runs after the new table answers and after Reload
// returns, so it delays neither a reload nor the daemon's start. One runs
// at a time; a load that finishes meanwhile gets one more run.
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
			start := time.Now()
			debug.FreeOSMemory()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			r.logger().Debug("memory of the policy table load returned to the OS", "took", time.Since(start).Round(time.Millisecond),
				"heap_inuse_mb", ms.HeapInuse>>20, "heap_released_mb", ms.HeapReleased>>20)
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

// watchSet is what a change event must touch to trigger a reload.
type watchSet struct {
	dirs  map[string]bool // directories watched
	files map[string]bool // files the table was read from
	root  string          // the table directory, whose new *.yaml files count too
}

func (r *Reloader) currentWatchSet() (watchSet, error) {
	abs, err := filepath.Abs(r.Path)
	if err != nil {
		return watchSet{}, fmt.Errorf("table path: %w", err)
	}
	ws := watchSet{dirs: map[string]bool{}, files: map[string]bool{}}
	if s := r.Engine.Store(); s != nil {
		t := s.Table()
		for _, d := range t.Dirs {
			ws.dirs[d] = true
		}
		for _, f := range t.Files {
			ws.files[f] = true
		}
	}
	// Always watch the table's own location, even before a first good load.
	if strings.HasSuffix(abs, ".yaml") || strings.HasSuffix(abs, ".yml") {
		ws.dirs[filepath.Dir(abs)] = true
		ws.files[abs] = true
	} else {
		ws.dirs[abs] = true
		ws.root = abs
	}
	return ws, nil
}

func (ws watchSet) relevant(name string) bool {
	if ws.files[name] {
		return true
	}
	if ws.root != "" && filepath.Dir(name) == ws.root {
		base := filepath.Base(name)
		return !strings.HasPrefix(base, ".") && (strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml"))
	}
	return false
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
				if err := w.Add(d); err != nil {
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

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod || !ws.relevant(filepath.Clean(ev.Name)) {
				continue
			}
			r.logger().Debug("policy table change", "file", ev.Name, "op", ev.Op.String())
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.logger().Warn("watching policy table", "error", err)
		case <-timer.C:
			_ = r.Reload() // errors are logged; the old table keeps serving
			if nws, err := r.currentWatchSet(); err == nil {
				ws = nws
				sync()
			}
		}
	}
}
