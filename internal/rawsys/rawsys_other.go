//go:build !linux

package rawsys

import "syscall"

// Read reads from the non-blocking descriptor fd into p, retrying on
// EINTR. It returns syscall.EAGAIN when fd has nothing to read. Outside
// Linux it is syscall.Read.
func Read(fd int, p []byte) (int, error) { return retryEINTR(syscall.Read, fd, p) }

// Write writes p to the non-blocking descriptor fd, retrying on EINTR. It
// may write less than len(p); it returns syscall.EAGAIN when fd takes
// nothing. Outside Linux it is syscall.Write.
func Write(fd int, p []byte) (int, error) { return retryEINTR(syscall.Write, fd, p) }

// retryEINTR calls f(fd, p) until it is not interrupted by a signal.
func retryEINTR(f func(int, []byte) (int, error), fd int, p []byte) (int, error) {
	for {
		n, err := f(fd, p)
		if err != syscall.EINTR {
			return n, err
		}
	}
}
