package harness

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PostfixConfig describes a throwaway Postfix instance.
type PostfixConfig struct {
	// Socketmap is the host:port of the socketmap server (tlspolicyd, a
	// stub, or a closed port), or unix:private/NAME for a unix socket in
	// the instance's queue directory (QueueDir/private/NAME), where its
	// chrooted smtp and trivial-rewrite processes reach it. When set, the instance runs the files users
	// copy: examples/postfix/main.cf is appended to main.cf and
	// examples/postfix/master.cf to master.cf, verbatim except that the
	// daemon address they name (ExampleSocketmap) becomes Socketmap (see
	// ExampleConfig). Main may not set a parameter the example sets.
	Socketmap string
	// MXPort is smtp_tcp_port: the port the smtp client connects to when
	// the next hop names none (the fake MX's port).
	MXPort int
	// Hosts maps host names to IP addresses in the chroot's
	// queue/etc/hosts; the smtp client resolves next hops with it only
	// (no DNS). AddHost adds more later.
	Hosts map[string]string
	// CAFile is smtp_tls_CAfile: the CA certificates (PEM) the smtp client
	// trusts, e.g. a TestCA's File, so that verify, secure and MTA-STS
	// answers can deliver to a fake MX with a certificate it issued. Empty:
	// the client trusts no CA (Postfix's default), and verify and secure
	// always defer. The file is read before the client enters its chroot.
	CAFile string
	// Main holds extra main.cf parameters; they override the defaults.
	Main map[string]string
	// Master holds extra master.cf lines (e.g. an smtpd listener).
	Master []string
}

// Postfix is a throwaway Postfix instance built per the recipe in
// shared/POSTFIX.md: its own config, queue and data directories under one
// temp dir, inet_interfaces = 127.0.0.1, a maillog_file, chrooted smtp with
// its own queue/etc/hosts, DNS disabled, local delivery discarded.
type Postfix struct {
	// Dir is the instance's root; ConfigDir holds main.cf and master.cf,
	// QueueDir is queue_directory, Maillog the maillog_file.
	Dir, ConfigDir, QueueDir, Maillog string

	t       testing.TB
	running bool
}

// baseMaster is master.cf for a client-side instance: the services Postfix
// needs internally, smtp chrooted, and the postlog service that
// maillog_file requires.
var baseMaster = []string{
	"pickup     unix  n       -       y       60      1       pickup",
	"cleanup    unix  n       -       y       -       0       cleanup",
	"qmgr       unix  n       -       n       300     1       qmgr",
	"tlsmgr     unix  -       -       y       1000?   1       tlsmgr",
	"rewrite    unix  -       -       y       -       -       trivial-rewrite",
	"bounce     unix  -       -       y       -       0       bounce",
	"defer      unix  -       -       y       -       0       bounce",
	"trace      unix  -       -       y       -       0       bounce",
	"verify     unix  -       -       y       -       1       verify",
	"flush      unix  n       -       y       1000?   0       flush",
	"proxymap   unix  -       -       n       -       -       proxymap",
	"proxywrite unix  -       -       n       -       1       proxymap",
	"smtp       unix  -       -       y       -       -       smtp",
	"relay      unix  -       -       y       -       -       smtp",
	"showq      unix  n       -       y       -       -       showq",
	"error      unix  -       -       y       -       -       error",
	"retry      unix  -       -       y       -       -       error",
	"discard    unix  -       -       y       -       -       discard",
	"anvil      unix  -       -       y       -       1       anvil",
	"scache     unix  -       -       y       -       1       scache",
	"postlog    unix-dgram n  -       n       -       1       postlogd",
}

// TransportLevels are the levels for which examples/postfix/master.cf
// defines a tlspolicyd-<level> transport.
var TransportLevels = []string{"encrypt", "verify", "secure"}

// ExampleSocketmap is the daemon address examples/postfix names in its
// socketmap: tables. It is the only thing the harness changes in those
// files: everything the instance needs besides (ports, paths, DNS off,
// the fake MX's port) is a parameter of the harness's own part of
// main.cf, which the example's transports inherit.
const ExampleSocketmap = "127.0.0.1:10041"

// ExampleConfig returns examples/postfix/NAME (main.cf or master.cf) with
// every "socketmap:inet:ExampleSocketmap:" replaced by
// "socketmap:inet:ADDR:" ("socketmap:unix:PATH:" for ADDR unix:PATH), and the names of the main.cf parameters it sets.
// It fails when the file names no such table or still names the example
// port afterwards, so a change to the examples cannot leave the tests
// running something else than what users copy.
func ExampleConfig(name, addr string) (text string, params []string, err error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(root, "examples", "postfix", name)
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("example config: %w", err)
	}
	from, to := "socketmap:inet:"+ExampleSocketmap+":", "socketmap:inet:"+addr+":"
	if strings.HasPrefix(addr, "unix:") {
		to = "socketmap:" + addr + ":"
	}
	if !strings.Contains(string(b), from) {
		return "", nil, fmt.Errorf("%s names no %s table: the harness cannot point it at the test daemon", path, from)
	}
	text = strings.ReplaceAll(string(b), from, to)
	if _, port, _ := strings.Cut(ExampleSocketmap, ":"); strings.Contains(text, ":"+port) {
		return "", nil, fmt.Errorf("%s names port %s outside a %s table", path, port, from)
	}
	for line := range strings.Lines(text) {
		if line == "" || line[0] == '#' || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if k, _, ok := strings.Cut(line, "="); ok {
			params = append(params, strings.TrimSpace(k))
		}
	}
	return text, params, nil
}

// NewPostfix writes the instance's files and starts it. t.Cleanup stops
// it, waits for its master process to exit and removes the directory;
// when the test failed it logs the maillog first. Call RequirePostfix
// before. The methods return errors rather than failing t, so subtests
// may use an instance created by their parent.
func NewPostfix(t testing.TB, cfg PostfixConfig) *Postfix {
	t.Helper()
	dir, err := os.MkdirTemp("", "tlspolicyd-postfix-")
	if err != nil {
		t.Fatalf("postfix instance dir: %v", err)
	}
	p := &Postfix{
		Dir:       dir,
		ConfigDir: filepath.Join(dir, "etc"),
		QueueDir:  filepath.Join(dir, "queue"),
		Maillog:   filepath.Join(dir, "maillog"),
		t:         t,
	}
	t.Cleanup(p.cleanup)
	if err := p.write(cfg); err != nil {
		t.Fatalf("postfix instance: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatalf("postfix instance: %v", err)
	}
	return p
}

func (p *Postfix) write(cfg PostfixConfig) error {
	// Daemons run as user postfix: every directory on the path must be
	// traversable, and data_directory must belong to postfix.
	if err := os.Chmod(p.Dir, 0o755); err != nil {
		return fmt.Errorf("chmod %s: %w", p.Dir, err)
	}
	data := filepath.Join(p.Dir, "data")
	for _, d := range []string{p.ConfigDir, filepath.Join(p.QueueDir, "etc"), data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		return fmt.Errorf("look up user postfix: %w", err)
	}
	uid, _ := strconv.Atoi(pf.Uid)
	gid, _ := strconv.Atoi(pf.Gid)
	if err := os.Chown(data, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", data, err)
	}

	main := map[string]string{
		"compatibility_level":   "3.6",
		"queue_directory":       p.QueueDir,
		"data_directory":        data,
		"maillog_file":          p.Maillog,
		"maillog_file_prefixes": p.Dir,
		"inet_interfaces":       "127.0.0.1",
		"inet_protocols":        "ipv4",
		"myhostname":            "pf.tlspolicyd-test.invalid",
		"mydestination":         "$myhostname",
		"local_transport":       "discard:",
		"alias_maps":            "",
		"alias_database":        "",
		"relayhost":             "",
		"biff":                  "no",
		// Next hops resolve through queue/etc/hosts only, never DNS, and
		// the smtp client connects to the fake MX's port.
		"smtp_dns_support_level":  "disabled",
		"smtp_host_lookup":        "native",
		"smtp_tls_security_level": "may",
		"smtp_tls_loglevel":       "1",
		"smtp_connect_timeout":    "5s",
	}
	if cfg.MXPort != 0 {
		main["smtp_tcp_port"] = strconv.Itoa(cfg.MXPort)
	}
	if cfg.CAFile != "" {
		main["smtp_tls_CAfile"] = cfg.CAFile
	}
	maps.Copy(main, cfg.Main)
	master := strings.Join(slices.Concat(baseMaster, cfg.Master), "\n") + "\n"
	var exampleMain string
	if cfg.Socketmap != "" {
		// The example files follow the harness's part, as they follow
		// the rest of a real main.cf and master.cf. Postfix warns about a
		// parameter set twice, so the harness's own copy of one the
		// example sets is dropped; a test overriding one is an error.
		text, params, err := ExampleConfig("main.cf", cfg.Socketmap)
		if err != nil {
			return err
		}
		for _, k := range params {
			if _, ok := cfg.Main[k]; ok {
				return fmt.Errorf("PostfixConfig.Main sets %s, which examples/postfix/main.cf sets: the tests run the example's setting", k)
			}
			delete(main, k)
		}
		exampleMain = "\n# examples/postfix/main.cf, socketmap:inet:" + ExampleSocketmap + ": -> socketmap:inet:" + cfg.Socketmap + ":\n" + text
		text, _, err = ExampleConfig("master.cf", cfg.Socketmap)
		if err != nil {
			return err
		}
		master += "\n# examples/postfix/master.cf, socketmap:inet:" + ExampleSocketmap + ": -> socketmap:inet:" + cfg.Socketmap + ":\n" + text
	}

	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(main)) {
		fmt.Fprintf(&b, "%s = %s\n", k, main[k])
	}
	b.WriteString(exampleMain)
	files := map[string]string{
		filepath.Join(p.ConfigDir, "main.cf"):   b.String(),
		filepath.Join(p.ConfigDir, "master.cf"): master,
		// The chrooted smtp client resolves names inside the queue
		// directory: files only, so nothing leaves loopback.
		filepath.Join(p.QueueDir, "etc", "nsswitch.conf"): "hosts: files\n",
		filepath.Join(p.QueueDir, "etc", "resolv.conf"):   "# no DNS in throwaway instances\n",
		filepath.Join(p.QueueDir, "etc", "hosts"):         "127.0.0.1 localhost\n",
	}
	for path, content := range files {
		if err := writeConfig(path, content); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Hosts)) {
		if err := p.AddHost(name, cfg.Hosts[name]); err != nil {
			return err
		}
	}
	return nil
}

// AddHost maps name to ip in the chroot's hosts file. The resolver reads
// the file on every lookup, so this works on a running instance.
func (p *Postfix) AddHost(name, ip string) error {
	path := filepath.Join(p.QueueDir, "etc", "hosts")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := fmt.Fprintf(f, "%s %s\n", ip, name); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// Command runs a Postfix program with "-c ConfigDir" (sendmail takes -C)
// prepended to args. The error is set only when the program could not be
// run; check Result.Code for its exit status.
func (p *Postfix) Command(ctx context.Context, stdin, name string, args ...string) (Result, error) {
	flag := "-c"
	if name == "sendmail" {
		flag = "-C"
	}
	return Run(ctx, stdin, name, append([]string{flag, p.ConfigDir}, args...)...)
}

// command runs a Postfix program that must exit 0.
func (p *Postfix) command(ctx context.Context, stdin, name string, args ...string) (Result, error) {
	res, err := p.Command(ctx, stdin, name, args...)
	if err != nil {
		return res, fmt.Errorf("postfix instance %s: %w", p.Dir, err)
	}
	if res.Code != 0 {
		return res, fmt.Errorf("%s -c %s %s: %s", name, p.ConfigDir, strings.Join(args, " "), res)
	}
	return res, nil
}

// Start runs `postfix start`. It runs the checks of `postfix check`
// itself (postfix-script check-fatal, then check-warn) and fails when they
// find a fatal problem, so a separate `postfix check` would only cost time.
// The warnings that queue/etc/hosts, resolv.conf and nsswitch.conf differ
// from /etc are expected.
func (p *Postfix) Start(ctx context.Context) error {
	if _, err := p.command(ctx, "", "postfix", "start"); err != nil {
		return err
	}
	p.running = true
	return nil
}

// Stop runs `postfix stop` and waits (up to 10 s) for the master process
// to exit. Stopping a stopped instance does nothing.
func (p *Postfix) Stop(ctx context.Context) error {
	if !p.running {
		return nil
	}
	p.running = false
	pid := p.masterPID()
	if _, err := p.command(ctx, "", "postfix", "stop"); err != nil {
		return err
	}
	if pid > 0 && !WaitFor(ctx, 10*time.Second, func() bool {
		return syscall.Kill(pid, 0) != nil
	}) {
		return fmt.Errorf("postfix master %d still running 10 s after postfix stop", pid)
	}
	return nil
}

func (p *Postfix) masterPID() int {
	b, err := os.ReadFile(filepath.Join(p.QueueDir, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func (p *Postfix) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		p.t.Errorf("stop postfix: %v", err)
	}
	if p.t.Failed() {
		if b, err := os.ReadFile(p.Maillog); err == nil {
			p.t.Logf("maillog of %s:\n%s", p.Dir, b)
		}
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		p.t.Logf("remove postfix instance dir: %v", err)
	}
}

// Log returns the instance's maillog so far.
func (p *Postfix) Log() string {
	b, err := os.ReadFile(p.Maillog)
	if err != nil {
		return ""
	}
	return string(b)
}

// Send submits a message from sender to rcpts with sendmail and returns its
// queue ID, read from cleanup's "QID: message-id=<…>" log line (waiting up
// to 10 s for it).
func (p *Postfix) Send(ctx context.Context, sender string, rcpts []string, subject string) (string, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	msgID := hex.EncodeToString(rnd[:]) + "@tlspolicyd-test.invalid"
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s>\r\n\r\nbody of %s\r\n",
		sender, strings.Join(rcpts, ">, <"), subject, msgID, subject)
	args := append([]string{"-f", sender, "--"}, rcpts...)
	if _, err := p.command(ctx, msg, "sendmail", args...); err != nil {
		return "", err
	}
	var qid string
	needle := ": message-id=<" + msgID + ">"
	if !WaitFor(ctx, 10*time.Second, func() bool {
		qid = findQID(p.Log(), needle)
		return qid != ""
	}) {
		return "", fmt.Errorf("message %s not picked up within 10 s", msgID)
	}
	return qid, nil
}

// findQID returns the queue ID in front of needle in a maillog line
// ("… postfix/cleanup[123]: 4ABCD12345: message-id=<…>").
func findQID(log, needle string) string {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		line, _, ok := strings.Cut(sc.Text(), needle)
		if !ok {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i >= 0 {
			return line[i+1:]
		}
	}
	return ""
}

// QueueEntry is one message in `postqueue -j` output.
type QueueEntry struct {
	QueueName  string           `json:"queue_name"`
	QueueID    string           `json:"queue_id"`
	Sender     string           `json:"sender"`
	Recipients []QueueRecipient `json:"recipients"`
}

// QueueRecipient is a recipient not yet delivered, with the reason of its
// last deferral (empty before the first attempt).
type QueueRecipient struct {
	Address     string `json:"address"`
	DelayReason string `json:"delay_reason"`
}

// Queue returns the queue as `postqueue -j` lists it.
func (p *Postfix) Queue(ctx context.Context) ([]QueueEntry, error) {
	res, err := p.command(ctx, "", "postqueue", "-j")
	if err != nil {
		return nil, err
	}
	var out []QueueEntry
	for line := range strings.Lines(res.Stdout) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var e QueueEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return nil, fmt.Errorf("postqueue -j: parse %q: %w", line, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Entry returns the queue entry qid; ok is false when it left the queue.
func (p *Postfix) Entry(ctx context.Context, qid string) (e QueueEntry, ok bool, err error) {
	q, err := p.Queue(ctx)
	if err != nil {
		return QueueEntry{}, false, err
	}
	for _, e := range q {
		if e.QueueID == qid {
			return e, true, nil
		}
	}
	return QueueEntry{}, false, nil
}

// WaitDeferred waits up to timeout until message qid sits in the deferred
// queue with rcpt among its recipients and a delay reason, and returns
// that recipient.
func (p *Postfix) WaitDeferred(ctx context.Context, qid, rcpt string, timeout time.Duration) (QueueRecipient, error) {
	var (
		got     QueueRecipient
		last    QueueEntry
		present bool
		err     error
	)
	ok := WaitFor(ctx, timeout, func() bool {
		last, present, err = p.Entry(ctx, qid)
		if err != nil || !present || last.QueueName != "deferred" {
			return err != nil
		}
		for _, r := range last.Recipients {
			if r.Address == rcpt && r.DelayReason != "" {
				got = r
				return true
			}
		}
		return false
	})
	switch {
	case err != nil:
		return QueueRecipient{}, err
	case !ok && !present:
		return QueueRecipient{}, fmt.Errorf("message %s to %s not deferred within %v: it left the queue (delivered?)", qid, rcpt, timeout)
	case !ok:
		return QueueRecipient{}, fmt.Errorf("message %s to %s not deferred within %v: queue entry %+v", qid, rcpt, timeout, last)
	}
	return got, nil
}

// WaitGone waits up to timeout until message qid has left the queue
// (delivered, or bounced).
func (p *Postfix) WaitGone(ctx context.Context, qid string, timeout time.Duration) error {
	var (
		last    QueueEntry
		present bool
		err     error
	)
	WaitFor(ctx, timeout, func() bool {
		last, present, err = p.Entry(ctx, qid)
		return err != nil || !present
	})
	switch {
	case err != nil:
		return err
	case present:
		return fmt.Errorf("message %s still queued after %v: %+v", qid, timeout, last)
	}
	return nil
}

// Flush runs `postqueue -f`: every queued message is retried at once, and
// destinations the queue manager marked dead are revived.
func (p *Postfix) Flush(ctx context.Context) error {
	_, err := p.command(ctx, "", "postqueue", "-f")
	return err
}

// Retry runs `postqueue -i qid`: message qid is retried at once.
func (p *Postfix) Retry(ctx context.Context, qid string) error {
	_, err := p.command(ctx, "", "postqueue", "-i", qid)
	return err
}
