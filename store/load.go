package store

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// ParseFile parses one YAML table file read from r; name is used in
// error messages and to resolve includes, which are read from disk
// relative to name's directory. The error, if any, is a *LoadError, whose
// ErrorList holds every problem found.
func ParseFile(name string, r io.Reader) (*Table, error) {
	p := newParser()
	p.root = name
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
	p.root = path
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
