// Command floor is the benchmark's reference server: it answers every
// socketmap lookup with NOTFOUND and every policy delegation request with
// action=DUNNO, reading each request only as far as its framing (a
// netstring; lines up to the empty one). It is a Go server that does no
// work, written the plain way (a goroutine per connection on net.Conn, a
// buffered reader, one write per batch of answers), so its rate against
// redis-server's in the same run shows what the protocol and the load
// generator leave a server that answers without deciding on the machine,
// the reference tlspolicyd-bench's floor steps print beside the daemon's
// ratios. It is not a bound: the daemon's raw mode (socketmap/rawio.go)
// makes fewer system calls per request than net.Conn does.
//
//	floor -socketmap 127.0.0.1:10051 -policy 127.0.0.1:10052
//
// A request it cannot frame (a bad netstring length, a line longer than
// its buffer) closes the connection.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
)

const bufSize = 16 << 10

// Replies.
var (
	notFound = []byte("9:NOTFOUND ,")
	dunno    = []byte("action=DUNNO\n\n")
)

func main() {
	sm := flag.String("socketmap", "", "socketmap listener address (host:port)")
	pd := flag.String("policy", "", "policy delegation listener address (host:port)")
	flag.Parse()
	if *sm == "" && *pd == "" {
		fmt.Fprintln(os.Stderr, "floor: need -socketmap or -policy")
		os.Exit(2)
	}
	errc := make(chan error, 2)
	for _, l := range []struct {
		addr  string
		serve func(*bufio.Reader, io.Writer) error
	}{{*sm, serveSocketmap}, {*pd, servePolicy}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "floor:", err)
			os.Exit(1)
		}
		go func() { errc <- acceptLoop(ln, l.serve) }()
	}
	fmt.Fprintln(os.Stderr, "floor:", <-errc)
	os.Exit(1)
}

// acceptLoop serves each connection of ln in a goroutine of its own.
func acceptLoop(ln net.Listener, serve func(*bufio.Reader, io.Writer) error) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go func() {
			defer c.Close()
			_ = serve(bufio.NewReaderSize(c, bufSize), c)
		}()
	}
}

// serveSocketmap answers each netstring request with NOTFOUND, writing
// the answers once no further request is buffered (so pipelined requests
// share a write, as in the daemon).
func serveSocketmap(r *bufio.Reader, w io.Writer) error {
	var out []byte
	for {
		hdr, err := r.ReadSlice(':')
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(string(hdr[:len(hdr)-1]))
		if err != nil || n < 0 || n > bufSize-1 {
			return fmt.Errorf("bad netstring length %q", hdr)
		}
		body, err := r.Peek(n + 1)
		if err != nil {
			return err
		}
		if body[n] != ',' {
			return errors.New("netstring without its comma")
		}
		_, _ = r.Discard(n + 1)
		if out, err = reply(r, w, append(out, notFound...)); err != nil {
			return err
		}
	}
}

// servePolicy answers each request (name=value lines up to an empty line)
// with action=DUNNO, writing as serveSocketmap does.
func servePolicy(r *bufio.Reader, w io.Writer) error {
	var out []byte
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if !bytes.Equal(line, []byte("\n")) {
			continue
		}
		if out, err = reply(r, w, append(out, dunno...)); err != nil {
			return err
		}
	}
}

// reply writes the answers in out once no further request is buffered in
// r, and returns out emptied then, else as it was.
func reply(r *bufio.Reader, w io.Writer, out []byte) ([]byte, error) {
	if r.Buffered() > 0 {
		return out, nil
	}
	_, err := w.Write(out)
	return out[:0], err
}
