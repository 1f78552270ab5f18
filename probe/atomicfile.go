package probe

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/snapshot"
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
func tempPrefix(path string) string { return snapshot.TempPrefix(path) }

// writeFileAtomic replaces path with data (see snapshot.WriteAtomic).
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return snapshot.WriteAtomic(path, data, perm)
}
