//go:build !linux

package rawsys

import "syscall"

// Read reads from the non-blocking descriptor fd into p, retrying on
// EINTR. It returns syscall.EAGAIN when fd has nothing to read. Outside
// Linux it is syscall.Read.
func Read(fd int, p []byte) (int, error) {
	for {
		n, err := syscall.Read(fd, p)
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// Write writes p to the non-blocking descriptor fd, retrying on EINTR. It
// may write less than len(p); it returns syscall.EAGAIN when fd takes
// nothing. Outside Linux it is syscall.Write.
func Write(fd int, p []byte) (int, error) {
	for {
		n, err := syscall.Write(fd, p)
		if err != syscall.EINTR {
			return n, err
		}
	}
}
