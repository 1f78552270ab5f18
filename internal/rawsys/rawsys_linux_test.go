package rawsys

import (
	"bytes"
	"syscall"
	"testing"
)

// pair returns the two ends of a non-blocking Unix stream socket pair,
// closed when the test ends.
func pair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fds[0]); syscall.Close(fds[1]) })
	return fds[0], fds[1]
}

func TestReadWrite(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write []string // written to one end, in order
		buf   int      // the read buffer's size
		want  []string // what successive Reads return until EAGAIN
	}{
		{"one request", []string{"5:hello,"}, 64, []string{"5:hello,"}},
		{"two writes, one read", []string{"ab", "cd"}, 64, []string{"abcd"}},
		{"short buffer", []string{"abcdef"}, 4, []string{"abcd", "ef"}},
		{"nothing written", nil, 64, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := pair(t)
			for _, w := range tc.write {
				n, err := Write(a, []byte(w))
				if err != nil || n != len(w) {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			buf := make([]byte, tc.buf)
			for _, want := range tc.want {
				n, err := Read(b, buf)
				if err != nil || string(buf[:n]) != want {
					t.Fatalf("Read = %q, %v; want %q", buf[:n], err, want)
				}
			}
			if n, err := Read(b, buf); err != syscall.EAGAIN {
				t.Fatalf("Read of a drained socket = %d, %v; want EAGAIN", n, err)
			}
		})
	}
}

func TestWriteFull(t *testing.T) {
	a, _ := pair(t)
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	total := 0
	for i := 0; ; i++ {
		n, err := Write(a, chunk)
		if err == syscall.EAGAIN {
			break
		}
		if err != nil {
			t.Fatalf("Write: %v", err)
		}
		total += n
		if i > 10000 {
			t.Fatal("Write never returned EAGAIN on a socket nobody reads")
		}
	}
	if total == 0 {
		t.Fatal("the socket took nothing before it was full")
	}
}

func TestReadEOFAndErrors(t *testing.T) {
	a, b := pair(t)
	syscall.Close(a)
	buf := make([]byte, 16)
	if n, err := Read(b, buf); n != 0 || err != nil {
		t.Fatalf("Read after the peer closed = %d, %v; want 0, nil (end of stream)", n, err)
	}
	if n, oobn, err := Recvmsg(b, buf, nil, 0); n != 0 || oobn != 0 || err != nil {
		t.Fatalf("Recvmsg after the peer closed = %d, %d, %v; want 0, 0, nil", n, oobn, err)
	}
	if _, err := Write(b, []byte("x")); err != syscall.EPIPE {
		t.Fatalf("Write to a closed peer: %v, want EPIPE", err)
	}
	if _, err := Read(-1, buf); err != syscall.EBADF {
		t.Fatalf("Read(-1): %v, want EBADF", err)
	}
}

// TestRecvmsgControl checks that Recvmsg hands over the data and the
// control messages: here the sender's credentials (SO_PASSCRED), as
// TCP_INQ's are in the socketmap server.
func TestRecvmsgControl(t *testing.T) {
	a, b := pair(t)
	if err := syscall.SetsockoptInt(b, syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1); err != nil {
		t.Fatalf("SO_PASSCRED: %v", err)
	}
	buf, oob := make([]byte, 16), make([]byte, 64)
	if _, _, err := Recvmsg(b, buf, oob, 0); err != syscall.EAGAIN {
		t.Fatalf("Recvmsg of an empty socket: %v, want EAGAIN", err)
	}
	if _, err := Write(a, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	n, oobn, err := Recvmsg(b, buf, oob, 0)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("Recvmsg = %q, %v; want ping", buf[:n], err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages: %v, %v; want one", msgs, err)
	}
	cred, err := syscall.ParseUnixCredentials(&msgs[0])
	if err != nil {
		t.Fatalf("ParseUnixCredentials: %v", err)
	}
	if int(cred.Pid) != syscall.Getpid() {
		t.Errorf("credentials name pid %d, want ours (%d)", cred.Pid, syscall.Getpid())
	}
}

// BenchmarkWriteRead is one small write and its read on a socket pair;
// compare it with BenchmarkWriteReadSyscall, the same through
// syscall.Write and syscall.Read. Without load the two differ only by the
// runtime's bookkeeping; what rawsys saves under load (sysmon's wake-ups
// and hand-offs) shows in tlspolicyd-bench (see the package doc).
func BenchmarkWriteRead(b *testing.B) {
	benchWriteRead(b, Write, Read)
}

// BenchmarkWriteReadSyscall is BenchmarkWriteRead through syscall.Write
// and syscall.Read.
func BenchmarkWriteReadSyscall(b *testing.B) {
	benchWriteRead(b, syscall.Write, syscall.Read)
}

func benchWriteRead(b *testing.B, write, read func(int, []byte) (int, error)) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	msg := []byte("9:NOTFOUND ,")
	buf := make([]byte, 64)
	for b.Loop() {
		if _, err := write(fds[0], msg); err != nil {
			b.Fatal(err)
		}
		if _, err := read(fds[1], buf); err != nil {
			b.Fatal(err)
		}
	}
}
