// Package exim runs Debian's Exim 4.96 binary for the end-to-end tests of
// examples/exim: string expansion (-be), address routing (-bt),
// host-checking SMTP sessions (-bh) and a listening daemon (-bdf), each with
// a throwaway configuration written by the test.
//
// The binary is never installed as the system MTA (exim4-daemon-light
// conflicts with postfix): tests/install-exim.sh unpacks it into
// /opt/tlspolicyd-test/exim. Every instance runs as root with -C, its own
// spool and log directories owned by the exim user, and nss_wrapper
// (LD_PRELOAD) for two things: the compiled-in user "Debian-exim", which the
// binary looks up before reading any configuration, is invented when the
// system lacks it (mapped to nobody); and host lookups (gethostbyaddr,
// gethostbyname) read an empty hosts file, so a reverse lookup of a test
// client fails at once instead of asking a DNS server. (Exim checks a
// reverse-lookup name with a forward DNS query, so the hosts file must stay
// empty: a verified client name is given with -oMs instead.) Nothing under
// /etc changes and nothing but loopback is contacted.
package exim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/tlspolicyd/tlspolicyd/internal/e2e"
)

// DefaultBinary is where tests/install-exim.sh puts the exim binary.
const DefaultBinary = "/opt/tlspolicyd-test/exim/bin/exim4"

// debianUser is the exim user compiled into Debian's binary.
const debianUser = "Debian-exim"

// Find returns the exim binary to test: $EXIM_BIN when set, else
// DefaultBinary. It fails when that file is not an executable.
func Find() (string, error) {
	bin := os.Getenv("EXIM_BIN")
	if bin == "" {
		bin = DefaultBinary
	}
	st, err := os.Stat(bin)
	if err != nil {
		return "", fmt.Errorf("exim binary: %w", err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("exim binary %s: not an executable file", bin)
	}
	return bin, nil
}

// nssWrapperPaths are the places Debian's libnss-wrapper puts the library.
var nssWrapperPaths = []string{
	"/usr/lib/*/libnss_wrapper.so",
	"/usr/lib64/libnss_wrapper.so",
	"/usr/lib/libnss_wrapper.so",
}

// findNSSWrapper returns the path of libnss_wrapper.so.
func findNSSWrapper() (string, error) {
	for _, pat := range nssWrapperPaths {
		if m, _ := filepath.Glob(pat); len(m) > 0 {
			return m[0], nil
		}
	}
	return "", errors.New("libnss_wrapper.so not found (Debian package libnss-wrapper)")
}

// Require skips t (e2e.Skipf: fails it in CI) unless it runs as root and
// the exim binary and nss_wrapper are present, and returns the binary's path.
func Require(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		e2e.Skipf(t, "the Exim tests run exim -C as root (its spool belongs to the exim user)")
	}
	bin, err := Find()
	if err != nil {
		e2e.Skipf(t, "%v (run tests/install-exim.sh, or set EXIM_BIN)", err)
	}
	if _, err := findNSSWrapper(); err != nil {
		e2e.Skipf(t, "%v (run tests/install-exim.sh)", err)
	}
	return bin
}

// Config is the text of an Exim configuration, section by section. The
// instance puts its own main options (paths, user, host name, environment)
// before Main.
type Config struct {
	Main       string
	ACL        string
	Routers    string
	Transports string
	// Retry is the retry section; empty means none, and Exim then fails
	// (bounces) an address at its first temporary error. Delivering
	// tests set one (e.g. "* * F,1h,1m") so a deferral stays queued.
	Retry string
	// Hosts is the nss_wrapper hosts file ("IP name" lines) that
	// gethostbyname reads, e.g. for a manualroute router's "byname" MX
	// names. Leave it empty for instances that receive: Exim checks a
	// client's reverse-lookup name there (see the package documentation).
	Hosts string
}

// Instance is one throwaway Exim configuration with its directories.
type Instance struct {
	// Dir is the instance's directory (mode 755, removed by t.Cleanup).
	Dir string
	// ConfigPath is the configuration file given to -C.
	ConfigPath string

	bin string
	env []string
	uid int
	gid int
}

// New writes cfg to a new instance directory and prepares what Exim needs to
// run there as root: spool and log directories owned by the exim user, and
// the nss_wrapper files. It skips t like Require when Exim is unavailable.
func New(t testing.TB, cfg Config) *Instance {
	t.Helper()
	bin := Require(t)
	wrapper, err := findNSSWrapper()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir(): its parents are 0700, and the exim user must reach
	// the spool directory and (in daemon mode) the TLS key.
	dir, err := os.MkdirTemp("", "tlspolicyd-exim-")
	if err != nil {
		t.Fatalf("exim instance: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	x := &Instance{Dir: dir, ConfigPath: filepath.Join(dir, "configure"), bin: bin}
	if err := x.setup(wrapper, cfg); err != nil {
		t.Fatalf("exim instance: %v", err)
	}
	return x
}

func (x *Instance) setup(wrapper string, cfg Config) error {
	if err := os.Chmod(x.Dir, 0o755); err != nil {
		return fmt.Errorf("chmod %s: %w", x.Dir, err)
	}
	passwd, group, err := x.users()
	if err != nil {
		return err
	}
	files := map[string]string{
		"passwd": passwd,
		"group":  group,
		// Empty unless the test routes by name: see the package
		// documentation.
		"hosts": cfg.Hosts,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(x.Dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	for _, d := range []string{"spool", "log"} {
		p := filepath.Join(x.Dir, d)
		if err := os.Mkdir(p, 0o750); err != nil {
			return fmt.Errorf("mkdir %s: %w", p, err)
		}
		if err := os.Chown(p, x.uid, x.gid); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
	}
	x.env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"LD_PRELOAD=" + wrapper,
		"NSS_WRAPPER_PASSWD=" + filepath.Join(x.Dir, "passwd"),
		"NSS_WRAPPER_GROUP=" + filepath.Join(x.Dir, "group"),
		"NSS_WRAPPER_HOSTS=" + filepath.Join(x.Dir, "hosts"),
	}
	conf := x.mainOptions() + cfg.Main +
		"\nbegin acl\n\n" + cfg.ACL +
		"\nbegin routers\n\n" + cfg.Routers +
		"\nbegin transports\n\n" + cfg.Transports
	if cfg.Retry != "" {
		conf += "\nbegin retry\n\n" + cfg.Retry + "\n"
	}
	if err := os.WriteFile(x.ConfigPath, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write configure: %w", err)
	}
	return nil
}

// users returns the nss_wrapper passwd and group files: copies of the
// system's, plus Debian-exim mapped to nobody when the system has no such
// user. It sets x.uid and x.gid to the exim user's.
func (x *Instance) users() (passwd, group string, err error) {
	pw, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return "", "", fmt.Errorf("read /etc/passwd: %w", err)
	}
	gr, err := os.ReadFile("/etc/group")
	if err != nil {
		return "", "", fmt.Errorf("read /etc/group: %w", err)
	}
	passwd, group = string(pw), string(gr)
	u, err := user.Lookup(debianUser)
	if err != nil {
		if u, err = user.Lookup("nobody"); err != nil {
			return "", "", fmt.Errorf("neither %s nor nobody exists: %w", debianUser, err)
		}
		passwd = strings.TrimSuffix(passwd, "\n") + "\n" +
			debianUser + ":x:" + u.Uid + ":" + u.Gid + "::/nonexistent:/usr/sbin/nologin\n"
		group = strings.TrimSuffix(group, "\n") + "\n" + debianUser + ":x:" + u.Gid + ":\n"
	}
	if x.uid, err = strconv.Atoi(u.Uid); err != nil {
		return "", "", fmt.Errorf("uid of %s: %w", u.Username, err)
	}
	if x.gid, err = strconv.Atoi(u.Gid); err != nil {
		return "", "", fmt.Errorf("gid of %s: %w", u.Username, err)
	}
	return passwd, group, nil
}

// mainOptions are the instance's own main-section options: its own paths,
// and keep_environment, without which Exim purges the NSS_WRAPPER_* and
// LD_PRELOAD variables from its environment.
func (x *Instance) mainOptions() string {
	return `# written by tests/internal/exim for one test
exim_path = ` + x.bin + `
spool_directory = ` + filepath.Join(x.Dir, "spool") + `
log_file_path = ` + filepath.Join(x.Dir, "log", "%slog") + `
pid_file_path = ` + filepath.Join(x.Dir, "exim.pid") + `
primary_hostname = mx.ourcorp.example
qualify_domain = ourcorp.example
# No lookups of client names at connection time; when a configuration asks
# for $sender_host_name, look it up with gethostbyaddr() (nss_wrapper's empty
# hosts file), never with a DNS PTR query.
host_lookup =
host_lookup_order = byaddr
# The whole session arrives on stdin at once in -bh mode.
smtp_enforce_sync = false
keep_environment = LD_PRELOAD : NSS_WRAPPER_PASSWD : NSS_WRAPPER_GROUP : NSS_WRAPPER_HOSTS

`
}

// command returns the exim command line for args, with -C and one
// -DNAME=value per define (sorted, so runs are reproducible).
func (x *Instance) command(ctx context.Context, defines map[string]string, args ...string) *exec.Cmd {
	full := []string{"-C", x.ConfigPath}
	names := make([]string, 0, len(defines))
	for n := range defines {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		full = append(full, "-D"+n+"="+defines[n])
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, x.bin, full...)
	cmd.Env = x.env
	cmd.Dir = x.Dir
	return cmd
}
