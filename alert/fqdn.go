package alert

import (
	"bufio"
	"io"
	"os"
	"strings"
)

// FQDN returns this host's fully-qualified name, as `hostname -f` finds it
// from /etc/hosts: the kernel's host name when it has a dot, else the
// canonical name of the /etc/hosts line listing it. ok is false when only
// a short name was found (relays with reject_non_fqdn_sender refuse a
// sender at a short name). DNS is not asked: the daemon's own name should
// not depend on a resolver at start.
func FQDN() (name string, ok bool) {
	h, _ := os.Hostname()
	if h == "" {
		return "localhost", false
	}
	if strings.Contains(h, ".") {
		return strings.TrimSuffix(h, "."), true
	}
	if f, err := os.Open("/etc/hosts"); err == nil {
		defer f.Close()
		if c := hostsCanonical(f, h); c != "" {
			return c, true
		}
	}
	return h, false
}

// hostsCanonical returns the first name with a dot on the first
// hosts(5) line of r that lists short (case-insensitive), or "".
func hostsCanonical(r io.Reader, short string) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		names := f[1:]
		listed := false
		for _, n := range names {
			if strings.EqualFold(n, short) || strings.EqualFold(strings.SplitN(n, ".", 2)[0], short) && strings.Contains(n, ".") {
				listed = true
				break
			}
		}
		if !listed {
			continue
		}
		for _, n := range names {
			if strings.Contains(strings.TrimSuffix(n, "."), ".") {
				return strings.ToLower(strings.TrimSuffix(n, "."))
			}
		}
		return ""
	}
	return ""
}

// DefaultFrom is the default sender of alert mail: tlspolicyd@ and this
// host's fully-qualified name (see FQDN).
func DefaultFrom() (from string, fqdn bool) {
	h, ok := FQDN()
	return "tlspolicyd@" + h, ok
}
