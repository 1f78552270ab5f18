package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// SocketmapSpec returns the Postfix table name of map mapName served by the
// socketmap server at addr (host:port): "socketmap:inet:ADDR:MAP".
func SocketmapSpec(addr, mapName string) string {
	return "socketmap:inet:" + addr + ":" + mapName
}

// PostmapConfig creates a config directory holding a minimal main.cf and
// returns its path. Every Postfix command reads main.cf, and a Postfix
// package installed with "No configuration" has none in /etc/postfix, so
// postmap runs that need no instance use this one (postmap -c DIR).
func PostmapConfig(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	mainCF := "compatibility_level = 3.6\nmyhostname = postmap.tlspolicyd-test.invalid\n"
	if err := writeConfig(filepath.Join(dir, "main.cf"), mainCF); err != nil {
		t.Fatalf("postmap main.cf: %v", err)
	}
	return dir
}

// Postmap runs `postmap -c confDir -q key spec` and returns what it printed
// and its exit code. As docs/postfix.md says: found → the data on stdout,
// exit 0; not found → nothing, exit 1; an error (TEMP/TIMEOUT/PERM, no
// server) → exit 1 with "postmap: fatal: table …: query error" on stderr.
func Postmap(ctx context.Context, confDir, key, spec string) (Result, error) {
	return Run(ctx, "", "postmap", "-c", confDir, "-q", key, spec)
}

// writeConfig writes a Postfix configuration file dated a few seconds in
// the past. Postfix refuses to read a file modified within the current
// second (it could still be being written) and sleeps until the second is
// over, up to ~2 s per command with a fresh main.cf.
func writeConfig(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	past := time.Now().Add(-5 * time.Second)
	if err := os.Chtimes(path, past, past); err != nil {
		return fmt.Errorf("date %s: %w", path, err)
	}
	return nil
}
