//go:build !linux

package connserver

import (
	"errors"
	"net"
	"syscall"
)

// rawConnOf returns nil: raw mode (rawio.go) needs Linux's TCP_INQ.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

// recv, write and shutdown are not called without raw mode.
func (s *source) recv([]byte) (int, int, error) { return 0, 0, errors.ErrUnsupported }
func write(int, []byte) (int, error)            { return 0, errors.ErrUnsupported }
func shutdown(uintptr)                          {}
