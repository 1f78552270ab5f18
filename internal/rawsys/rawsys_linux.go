package rawsys

import (
	"syscall"
	"unsafe"
)

// Read reads from the non-blocking descriptor fd into p, retrying on
// EINTR. It returns syscall.EAGAIN when fd has nothing to read.
func Read(fd int, p []byte) (int, error) { return readWrite(syscall.SYS_READ, fd, p) }

// Write writes p to the non-blocking descriptor fd, retrying on EINTR. It
// may write less than len(p); it returns syscall.EAGAIN when fd takes
// nothing.
func Write(fd int, p []byte) (int, error) { return readWrite(syscall.SYS_WRITE, fd, p) }

// readWrite makes the read or write system call trap on fd and p.
func readWrite(trap uintptr, fd int, p []byte) (int, error) {
	var b unsafe.Pointer
	if len(p) > 0 {
		b = unsafe.Pointer(&p[0])
	}
	for {
		n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(b), uintptr(len(p)))
		if e != syscall.EINTR {
			return result(n, e)
		}
	}
}

// Recvmsg reads from the non-blocking socket fd into p, and control
// messages into oob, with flags (MSG_DONTWAIT is added), retrying on
// EINTR: syscall.Recvmsg without the runtime's accounting and without a
// source address. oobn is how much of oob was filled.
func Recvmsg(fd int, p, oob []byte, flags int) (n, oobn int, err error) {
	var iov syscall.Iovec
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
	}
	var msg syscall.Msghdr
	msg.Iov, msg.Iovlen = &iov, 1
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags|syscall.MSG_DONTWAIT))
		if e != syscall.EINTR {
			n, err = result(r, e)
			if err != nil {
				return 0, 0, err
			}
			return n, int(msg.Controllen), nil
		}
	}
}

func result(n uintptr, e syscall.Errno) (int, error) {
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
