// Package rawsys reads and writes non-blocking sockets with raw system
// calls: calls that the Go runtime does not account as system calls
// (syscall.RawSyscall rather than syscall.Syscall). The socketmap and
// policy servers use it in raw mode, where each request costs one read
// and one write of a socket the runtime has made non-blocking.
//
// Why: syscall.Syscall tells the runtime that the goroutine's thread is
// in a system call (entersyscall), so that the runtime's sysmon thread
// may hand the processor (P) to another thread if the call blocks. sysmon
// looks every 20 µs while it finds such calls to take over, and takes
// over a P it has seen in the same call on two looks. On a virtual
// machine a write to a loopback socket, which wakes the reader, often
// lasts that long: under load sysmon then never slowed down (50,000
// sleeps and wake-ups a second) and its hand-offs woke further threads.
// A call on a non-blocking socket never waits for the peer, so there is
// nothing to hand over (bench/README.md, "Raw system calls", has the
// measurements).
//
// Only for descriptors in non-blocking mode (every socket of a net.Conn
// is): a call that blocked would hold its P, and the goroutines queued
// on it, until it returned.
package rawsys
