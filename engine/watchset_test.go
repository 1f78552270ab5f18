package engine

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReloaderFollowsSymlinks: a table reached through a symbolic link
// reloads when the link's target is edited (in place or by rename), and
// follows the link when it is re-pointed or its target directory is
// replaced. Before, edits of a target were never seen.
func TestReloaderFollowsSymlinks(t *testing.T) {
	mkdirs := func(t *testing.T, dirs ...string) {
		for _, d := range dirs {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	symlink := func(t *testing.T, target, link string) {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	const within = 2 * time.Second
	t.Run("table file", func(t *testing.T) {
		dir := t.TempDir()
		etc, git := filepath.Join(dir, "etc"), filepath.Join(dir, "git")
		mkdirs(t, etc, git)
		target := filepath.Join(git, "table.yaml")
		writeFile(t, target, "outbound:\n  bank.example: encrypt\n")
		symlink(t, "../git/table.yaml", filepath.Join(etc, "table.yaml"))
		e := startReloader(t, filepath.Join(etc, "table.yaml"))
		waitFor(t, e, "bank.example", "OK encrypt", within)
		writeFile(t, target, "outbound:\n  bank.example: verify\n")
		waitFor(t, e, "bank.example", "OK verify", within)
		replaceByRename(t, target, "outbound:\n  bank.example: secure\n")
		waitFor(t, e, "bank.example", "OK secure", within)
		// Re-pointed to another file: that one is followed from then on.
		other := filepath.Join(dir, "other", "table.yaml")
		mkdirs(t, filepath.Dir(other))
		writeFile(t, other, "outbound:\n  bank.example: may\n")
		symlink(t, other, filepath.Join(etc, ".new"))
		if err := os.Rename(filepath.Join(etc, ".new"), filepath.Join(etc, "table.yaml")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, e, "bank.example", "OK may", within)
		writeFile(t, other, "outbound:\n  bank.example: encrypt\n")
		waitFor(t, e, "bank.example", "OK encrypt", within)
	})
	t.Run("yaml link in the table directory", func(t *testing.T) {
		dir := t.TempDir()
		table, git := filepath.Join(dir, "table"), filepath.Join(dir, "git")
		mkdirs(t, table, git)
		writeFile(t, filepath.Join(table, "a.yaml"), "outbound:\n  a.example: encrypt\n")
		target := filepath.Join(git, "b.yaml")
		writeFile(t, target, "outbound:\n  bank.example: encrypt\n")
		symlink(t, target, filepath.Join(table, "b.yaml"))
		e := startReloader(t, table)
		waitFor(t, e, "bank.example", "OK encrypt", within)
		writeFile(t, target, "outbound:\n  bank.example: verify\n")
		waitFor(t, e, "bank.example", "OK verify", within)
		replaceByRename(t, target, "outbound:\n  bank.example: secure\n")
		waitFor(t, e, "bank.example", "OK secure", within)
	})
	t.Run("table directory link, target replaced", func(t *testing.T) {
		dir := t.TempDir()
		etc, git := filepath.Join(dir, "etc"), filepath.Join(dir, "srv", "git")
		policy := filepath.Join(git, "mail-policy")
		mkdirs(t, etc, policy)
		writeFile(t, filepath.Join(policy, "t.yaml"), "outbound:\n  bank.example: encrypt\n")
		link := filepath.Join(etc, "table")
		symlink(t, policy, link)
		e := startReloader(t, link)
		waitFor(t, e, "bank.example", "OK encrypt", within)
		writeFile(t, filepath.Join(policy, "t.yaml"), "outbound:\n  bank.example: verify\n")
		waitFor(t, e, "bank.example", "OK verify", within)
		// A new checkout renamed over the link's target.
		next := filepath.Join(git, ".mail-policy.new")
		mkdirs(t, next)
		writeFile(t, filepath.Join(next, "t.yaml"), "outbound:\n  bank.example: secure\n")
		if err := os.Rename(policy, policy+".old"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(next, policy); err != nil {
			t.Fatal(err)
		}
		waitFor(t, e, "bank.example", "OK secure", within)
		replaceByRename(t, filepath.Join(policy, "t.yaml"), "outbound:\n  bank.example: may\n")
		waitFor(t, e, "bank.example", "OK may", within)
	})
	t.Run("include link", func(t *testing.T) {
		dir := t.TempDir()
		etc, git := filepath.Join(dir, "etc"), filepath.Join(dir, "git")
		mkdirs(t, etc, git)
		target := filepath.Join(git, "tls_policy")
		writeFile(t, target, "bank.example encrypt\n")
		symlink(t, target, filepath.Join(etc, "tls_policy"))
		writeFile(t, filepath.Join(etc, "t.yaml"), "include:\n  - postfix: tls_policy\n")
		e := startReloader(t, filepath.Join(etc, "t.yaml"))
		waitFor(t, e, "bank.example", "OK encrypt", within)
		writeFile(t, target, "bank.example verify\n")
		waitFor(t, e, "bank.example", "OK verify", within)
	})
}
