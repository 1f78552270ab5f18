package harness

import (
	"context"
	"os"
	"path/filepath"
	"testing"
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
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatalf("write postmap main.cf: %v", err)
	}
	return dir
}

// Postmap runs `postmap -c confDir -q key spec` and returns what it printed
// and its exit code. Per POSTFIX.md: found → the data on stdout, exit 0;
// not found → nothing, exit 1; an error (TEMP/TIMEOUT/PERM, no server) →
// exit 1 with "postmap: fatal: table …: query error" on stderr.
func Postmap(ctx context.Context, confDir, key, spec string) (Result, error) {
	return Run(ctx, "", "postmap", "-c", confDir, "-q", key, spec)
}
