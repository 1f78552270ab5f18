package connserver

import (
	"net"
	"syscall"
	"unsafe"

	"github.com/tlspolicyd/tlspolicyd/internal/rawsys"
)

// tcpINQ is TCP_INQ, the socket option, and TCP_CM_INQ, the control
// message it adds to each recvmsg (linux/tcp.h, Linux 4.18).
const tcpINQ = 36

// rawConnOf returns nc's syscall.RawConn for raw mode (rawio.go) if nc is a
// TCP connection and TCP_INQ can be turned on; nil otherwise.
func rawConnOf(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	cerr := rc.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_TCP, tcpINQ, 1)
	})
	if cerr != nil || err != nil {
		return nil
	}
	return rc
}

// recv reads from s.fd without blocking. inq is what the socket still
// holds after the read: bytes, or 1 for a FIN; -1 if unknown.
func (s *source) recv(p []byte) (n, inq int, err error) {
	n, oobn, err := rawsys.Recvmsg(s.fd, p, s.oob[:], 0)
	if err != nil {
		return 0, 0, err
	}
	inq = -1
	if oobn >= syscall.CmsgLen(4) {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&s.oob[0]))
		if h.Level == syscall.SOL_TCP && h.Type == tcpINQ {
			inq = int(*(*int32)(unsafe.Pointer(&s.oob[syscall.CmsgLen(0)])))
		}
	}
	return n, inq, nil
}

// write writes p to fd without blocking.
func write(fd int, p []byte) (int, error) { return rawsys.Write(fd, p) }

// shutdown shuts fd down both ways.
func shutdown(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) }
