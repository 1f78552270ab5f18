// Package listen opens the daemon's listeners from the address forms of the
// configuration: "host:port", "[::1]:port" and "unix:/path".
package listen

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"
)

// Listen opens a listener for addr. For "unix:/path" it removes a stale
// socket file first (only if it is a socket nobody listens on: a second
// daemon started on the path of a running one fails instead of taking the
// path from it) and sets the socket's permission bits to mode (e.g. 0660)
// so that Postfix's unprivileged processes can connect.
func Listen(addr string, mode fs.FileMode) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return nil, fmt.Errorf("listen %q: empty socket path", addr)
		}
		if fi, err := os.Lstat(path); err == nil {
			if fi.Mode()&fs.ModeSocket == 0 {
				return nil, fmt.Errorf("listen %q: %s exists and is not a socket", addr, path)
			}
			if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("listen %q: %s is in use: another process listens on it", addr, path)
			}
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("listen %q: remove stale socket: %w", addr, err)
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("listen %q: %w", addr, err)
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen %q: %w", addr, err)
		}
		if mode != 0 {
			if err := os.Chmod(path, mode); err != nil {
				l.Close()
				return nil, fmt.Errorf("listen %q: chmod %o: %w", addr, mode, err)
			}
		}
		return l, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("listen %q: want host:port, [::1]:port or unix:/path: %w", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w", addr, err)
	}
	return l, nil
}
