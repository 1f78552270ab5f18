// Package exim runs Debian's Exim 4.96 binary for the end-to-end tests of
// examples/exim: string expansion (-be), address routing (-bt),
// host-checking SMTP sessions (-bh) and a listening daemon (-bdf), each with
// a throwaway configuration written by the test.
//
// The binary is never installed as the system MTA (exim4-daemon-light
// conflicts with postfix): tests/install-exim.sh unpacks it into
// /opt/tlspolicyd-test/exim. Following shared/EXIM.md, every instance runs
// as root with -C, its own spool and log directories owned by the exim user,
// and nss_wrapper (LD_PRELOAD) for two things: the compiled-in user
// "Debian-exim", which the binary looks up before reading any
// configuration, is invented when the system lacks it (mapped to nobody);
// and host lookups (gethostbyaddr, gethostbyname) read an empty hosts file,
// so a reverse lookup of a test client fails at once instead of asking a DNS
// server. (Exim checks a reverse-lookup name with a forward DNS query, so
// the hosts file must stay empty: a verified client name is given with
// -oMs instead.) Nothing under /etc changes and nothing but loopback is
// contacted.
package exim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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

// mainOptions are the instance's own main-section options (EXIM.md,
// "Running Exim 4.96 beside Postfix in tests").
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

// Result is the outcome of one exim run.
type Result struct {
	Stdout, Stderr string
	// Code is the exit status.
	Code int
}

// String formats r for failure messages.
func (r Result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
}

// Run runs exim with the macros defines and args, feeding it stdin. A
// non-zero exit is not an error; err is set only when exim could not run or
// ctx ended.
func (x *Instance) Run(ctx context.Context, defines map[string]string, stdin string, args ...string) (Result, error) {
	cmd := x.command(ctx, defines, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	res := Result{Stdout: out.String(), Stderr: errb.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() >= 0 && ctx.Err() == nil:
		res.Code = exit.ExitCode()
	default:
		res.Code = -1
		return res, fmt.Errorf("exim %s: %w (%s)", strings.Join(args, " "), err, res)
	}
	return res, nil
}

// ExpandError is a string expansion that Exim reported as failed.
type ExpandError struct {
	// Message is Exim's reason, after "Failed: ".
	Message string
}

func (e *ExpandError) Error() string { return "expansion failed: " + e.Message }

// Expand evaluates exprs with one exim -be run (macros of the
// configuration and defines are substituted first) and returns one result
// per expression. A failed expansion is an *ExpandError in errs (nil for the
// others); err is set when exim did not run properly. Results must not
// contain newlines: -be prints one line per expression.
func (x *Instance) Expand(ctx context.Context, defines map[string]string, exprs ...string) (results []string, errs []error, err error) {
	res, err := x.Run(ctx, defines, "", append([]string{"-be"}, exprs...)...)
	if err != nil {
		return nil, nil, err
	}
	lines := strings.Split(strings.TrimSuffix(res.Stdout, "\n"), "\n")
	if res.Code != 0 || len(lines) != len(exprs) || strings.Contains(res.Stderr, "configuration error") {
		return nil, nil, fmt.Errorf("exim -be %q: %s", exprs, res)
	}
	errs = make([]error, len(lines))
	for i, l := range lines {
		if msg, ok := strings.CutPrefix(l, "Failed: "); ok {
			errs[i] = &ExpandError{Message: msg}
			lines[i] = ""
		}
	}
	return lines, errs, nil
}

// Expand1 is Expand for one expression.
func (x *Instance) Expand1(ctx context.Context, defines map[string]string, expr string) (string, error) {
	r, errs, err := x.Expand(ctx, defines, expr)
	if err != nil {
		return "", err
	}
	return r[0], errs[0]
}

// Route runs exim -bt for addr and returns what Exim printed (the router and
// transport, or why the address cannot be routed) and the exit code: 0
// routed, 1 deferred ("cannot be resolved at this time"), 2 failed.
func (x *Instance) Route(ctx context.Context, defines map[string]string, addr string) (string, int, error) {
	res, err := x.Run(ctx, defines, "", "-bt", addr)
	if err != nil {
		return "", -1, err
	}
	if strings.Contains(res.Stderr, "configuration error") {
		return "", -1, fmt.Errorf("exim -bt %s: %s", addr, res)
	}
	return res.Stdout, res.Code, nil
}

// Reply is one SMTP reply: its code and its text lines without the code.
type Reply struct {
	Code int
	// Lines are the text of each line after "NNN-" / "NNN ".
	Lines []string
}

// enhancedCode matches an RFC 3463 enhanced status code and its space.
var enhancedCode = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3} `)

// Text is the reply's text as one line: Exim wraps long replies and repeats
// the enhanced status code on every line; the repetitions are dropped and
// the lines joined with spaces.
func (r Reply) Text() string {
	if len(r.Lines) == 0 {
		return ""
	}
	code := enhancedCode.FindString(r.Lines[0])
	parts := []string{r.Lines[0]}
	for _, l := range r.Lines[1:] {
		if code != "" {
			l = strings.TrimPrefix(l, code)
		}
		parts = append(parts, l)
	}
	return strings.Join(parts, " ")
}

// String formats r as the first line would appear on the wire, with the rest
// of the text joined.
func (r Reply) String() string { return strconv.Itoa(r.Code) + " " + r.Text() }

// Session is the transcript of an exim -bh session.
type Session struct {
	// Replies are the server's replies in order: the greeting first.
	Replies []Reply
	// Log holds the lines Exim would have logged ("LOG: " stripped).
	Log []string
	// Raw is the whole output, for failure messages.
	Raw string
}

// HostCheck runs an exim -bh session "from" client (an IP address), to the
// server address 127.0.0.1 port 25, with the SMTP lines given (CRLF is
// added; use "\r" inside a line for a bare CR). extra are more command-line
// options, e.g. "-oMs", "name" for a verified client host name.
func (x *Instance) HostCheck(ctx context.Context, defines map[string]string, client string, lines []string, extra ...string) (*Session, error) {
	var in strings.Builder
	for _, l := range lines {
		in.WriteString(l + "\r\n")
	}
	args := append([]string{"-bh", client + ".40000", "-oMi", "127.0.0.1.25"}, extra...)
	res, err := x.Run(ctx, defines, in.String(), args...)
	if err != nil {
		return nil, err
	}
	s := &Session{Raw: res.String()}
	s.Replies = ParseReplies(res.Stdout)
	for _, l := range strings.Split(res.Stderr, "\n") {
		if msg, ok := strings.CutPrefix(l, "LOG: "); ok {
			s.Log = append(s.Log, msg)
		}
	}
	if len(s.Replies) == 0 || s.Replies[0].Code != 220 {
		return s, fmt.Errorf("exim -bh %s: no greeting: %s", client, res)
	}
	return s, nil
}

// ParseReplies extracts the SMTP replies from exim -bh output: lines
// "NNN-text" continue a reply, "NNN text" (or a bare "NNN") ends it; other
// lines (Exim's "**** SMTP testing" notes, blank lines) are skipped.
func ParseReplies(out string) []Reply {
	var replies []Reply
	var cur *Reply
	for _, l := range strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n") {
		if len(l) < 3 {
			continue
		}
		code, err := strconv.Atoi(l[:3])
		if err != nil || code < 200 || code > 599 || (len(l) > 3 && l[3] != ' ' && l[3] != '-') {
			continue
		}
		if cur == nil || cur.Code != code {
			replies = append(replies, Reply{Code: code})
			cur = &replies[len(replies)-1]
		}
		text := ""
		if len(l) > 4 {
			text = l[4:]
		}
		cur.Lines = append(cur.Lines, text)
		if len(l) == 3 || l[3] == ' ' {
			cur = nil
		}
	}
	return replies
}

// Daemon is a running exim -bdf listening on 127.0.0.1.
type Daemon struct {
	// Addr is the SMTP listening address (127.0.0.1:port).
	Addr string

	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// StartDaemon runs exim -bdf -oX port (foreground daemon; the configuration
// must set local_interfaces = 127.0.0.1) with defines, waits until it
// accepts connections and stops it in t.Cleanup (SIGTERM, then SIGKILL).
func (x *Instance) StartDaemon(t testing.TB, defines map[string]string, port int) *Daemon {
	t.Helper()
	cmd := x.command(context.Background(), defines, "-bdf", "-oX", strconv.Itoa(port))
	d := &Daemon{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start exim -bdf: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("exim -bdf output:\n%s\nmainlog:\n%s\npaniclog:\n%s", d.out.String(),
				readFile(filepath.Join(x.Dir, "log", "mainlog")), readFile(filepath.Join(x.Dir, "log", "paniclog")))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-d.exited:
			t.Fatalf("exim -bdf exited at start: %s\npaniclog: %s", d.out.String(), readFile(filepath.Join(x.Dir, "log", "paniclog")))
		default:
		}
		c, err := net.DialTimeout("tcp", d.Addr, time.Second)
		if err == nil {
			_ = c.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("exim -bdf not listening on %s after 10 s: %s", d.Addr, d.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// MainLog returns the instance's main log so far.
func (x *Instance) MainLog() string { return readFile(filepath.Join(x.Dir, "log", "mainlog")) }

// PanicLog returns the instance's panic log (usually absent: "(open …)").
func (x *Instance) PanicLog() string { return readFile(filepath.Join(x.Dir, "log", "paniclog")) }

func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(b)
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
