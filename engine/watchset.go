package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// watchSet is what a change event must touch to trigger a reload. Every
// path in it is in the form events carry: its directory with symbolic
// links resolved (directories are watched resolved, so that one inode is
// never watched under two names).
type watchSet struct {
	dirs  map[string]bool // directories watched
	files map[string]bool // files the table was read from, and every symlink on the way to them
	roots map[string]bool // the table path (a directory table): its links and the directory itself
	root  string          // the table directory, resolved: its new *.yaml files count too
}

// currentWatchSet returns what to watch: the files and directories of the
// table serving and, after a failed load, of that load too (an include
// it did not find), and always the table's own location. For a table
// directory that includes its parent directory: a deployment that
// replaces the whole directory by rename (mv new table, a symlink
// flipped) is seen there, where a watch on the directory itself follows
// the old one away.
//
// Symbolic links are followed: for a table file, a *.yaml file of the
// table directory, the table directory or an include that is a link,
// the directory of every link on the way and of the final target are
// watched, so that an edit of the target reloads as an edit of the link
// does. A change may re-point a link, so the set is computed anew after
// every change.
func (r *Reloader) currentWatchSet() (watchSet, error) {
	abs, err := filepath.Abs(r.Path)
	if err != nil {
		return watchSet{}, fmt.Errorf("table path: %w", err)
	}
	ws := watchSet{dirs: map[string]bool{}, files: map[string]bool{}, roots: map[string]bool{}}
	addFile := func(f string) {
		for _, h := range linkHops(f) {
			ws.files[eventName(h)] = true
			ws.dirs[resolveDir(filepath.Dir(h))] = true
		}
	}
	add := func(files, dirs []string) {
		for _, d := range dirs {
			ws.dirs[resolveDir(d)] = true
		}
		for _, f := range files {
			addFile(f)
		}
	}
	if s := r.Engine.Store(); s != nil {
		add(s.Table().Files, s.Table().Dirs)
	}
	if f := r.failed.Load(); f != nil {
		add(f.Files, f.Dirs)
	}
	// Always watch the table's own location, even before a first good load.
	if strings.HasSuffix(abs, ".yaml") || strings.HasSuffix(abs, ".yml") {
		addFile(abs)
		return ws, nil
	}
	hops := linkHops(abs)
	for _, h := range hops {
		ws.roots[eventName(h)] = true
		ws.dirs[resolveDir(filepath.Dir(h))] = true
	}
	ws.root = resolveDir(hops[len(hops)-1])
	ws.dirs[ws.root] = true
	return ws, nil
}

// relevant reports whether a change of name (as an event names it) can
// change the table.
func (ws watchSet) relevant(name string) bool {
	if ws.files[name] || ws.roots[name] || name == ws.root {
		return true
	}
	if ws.root != "" && filepath.Dir(name) == ws.root {
		base := filepath.Base(name)
		return !strings.HasPrefix(base, ".") && (strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml"))
	}
	return false
}

// maxHops bounds the links followed, as the kernel's ELOOP does.
const maxHops = 40

// linkHops returns path and, while it is a symbolic link, every path it
// leads to, up to the final target (absolute, cleaned). A path that does
// not exist (yet) ends the list.
func linkHops(path string) []string {
	hops := []string{filepath.Clean(path)}
	p := hops[0]
	for range maxHops {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			break
		}
		t, err := os.Readlink(p)
		if err != nil {
			break
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(p), t)
		}
		p = filepath.Clean(t)
		hops = append(hops, p)
	}
	// A link in a directory component of the last hop (a file of a
	// linked table directory): the file as the kernel finds it.
	if final, err := filepath.EvalSymlinks(p); err == nil && final != p {
		hops = append(hops, final)
	}
	return hops
}

// resolveDir returns dir with symbolic links resolved; a directory that
// does not exist is returned as it is (it is watched once created).
func resolveDir(dir string) string {
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		return d
	}
	return filepath.Clean(dir)
}

// eventName returns the name an event about path carries: its resolved
// directory joined with its base name.
func eventName(path string) string {
	return filepath.Join(resolveDir(filepath.Dir(path)), filepath.Base(path))
}
