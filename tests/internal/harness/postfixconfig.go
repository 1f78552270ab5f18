package harness

import (
	"fmt"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
	// ChrootFiles are written under the queue directory (the chrooted
	// clients' root), paths relative to it, replacing the harness's
	// etc/resolv.conf, etc/nsswitch.conf or etc/hosts of the same name:
	// e.g. a resolv.conf naming an in-process DNS server for a test
	// that turns DNS on (the machine's /etc/resolv.conf is never used).
	ChrootFiles map[string]string
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
	for name, content := range cfg.ChrootFiles {
		path := filepath.Join(p.QueueDir, filepath.Clean("/"+name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
		files[path] = content
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
