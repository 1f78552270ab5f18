package probe

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// staleTempAge is how old a temporary file of Save must be before a later
// process removes it: far longer than any Save takes, so that a Save
// running elsewhere on the same file is never disturbed.
const staleTempAge = 10 * time.Minute

// removeStaleTemps removes the temporary files a Save killed before its
// rename left next to path (see writeFileAtomic); a crash loop would
// otherwise fill the directory with them.
func (c *Cache) removeStaleTemps(path string) {
	dir := filepath.Dir(path)
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), tempPrefix(path)) {
			continue
		}
		m := filepath.Join(dir, de.Name())
		if fi, err := os.Lstat(m); err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > staleTempAge {
			if err := os.Remove(m); err == nil {
				c.log.Info("probe cache: removed a temporary file left by an interrupted save", "file", m)
			}
		}
	}
}

// tempPrefix is the name prefix of writeFileAtomic's temporary files for
// path.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// writeFileAtomic replaces path with data: temp file in the same
// directory (so rename is atomic), fsync, rename, fsync the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPrefix(path)+"*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err = tmp.Chmod(perm); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp.Name(), err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
