package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// encode builds the request bytes for one case once, so the generator
// spends its CPU on the sockets rather than on formatting.
func encode(proto, mapName string, c *testCase, n int) []byte {
	var b bytes.Buffer
	switch proto {
	case "socketmap":
		q := mapName + " " + c.Key
		fmt.Fprintf(&b, "%d:%s,", len(q), q)
	case "policy":
		if c.Req != "" {
			b.WriteString(strings.TrimRight(c.Req, "\n"))
			b.WriteString("\n\n")
		} else {
			k := c.Key
			fmt.Fprintf(&b, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.%d\nclient_name=mx.%s\nreverse_client_name=mx.%s\nhelo_name=mx.%s\nsender=alice@%s\nrecipient=bob@ourcorp.example\nrecipient_count=0\nqueue_id=\ninstance=%x.1\nsize=1234\nencryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\n\n", n%250, k, k, k, k, n)
		}
	case "redis":
		fmt.Fprintf(&b, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(c.Key), c.Key)
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown -proto %q\n", proto)
		os.Exit(2)
	}
	return b.Bytes()
}

func readNetstring(r *bufio.Reader) (string, error) {
	ls, err := r.ReadSlice(':')
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(string(ls[:len(ls)-1]))
	if err != nil || n < 0 || n > 100000 {
		return "", fmt.Errorf("bad netstring length %q", ls)
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	if buf[n] != ',' {
		return "", fmt.Errorf("netstring without comma")
	}
	return string(buf[:n]), nil
}

// readPolicy reads a policy reply and returns it without the final
// newlines ("action=DUNNO").
func readPolicy(r *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		l, err := r.ReadSlice('\n')
		if err != nil {
			return "", err
		}
		if len(l) == 1 {
			if sb.Len() == 0 {
				return "", fmt.Errorf("empty policy reply")
			}
			return strings.TrimSuffix(sb.String(), "\n"), nil
		}
		sb.Write(l)
	}
}

// readRESP reads a RESP reply: a bulk string's value, "(nil)" for a
// missing key, or the line of any other reply.
func readRESP(r *bufio.Reader) (string, error) {
	l, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(l, "$") {
		n, err := strconv.Atoi(strings.TrimSpace(l[1:]))
		if err != nil {
			return "", fmt.Errorf("bad RESP length %q", l)
		}
		if n < 0 {
			return "(nil)", nil
		}
		buf := make([]byte, n+2)
		_, err = io.ReadFull(r, buf)
		return string(buf[:n]), err
	}
	return strings.TrimRight(l, "\r\n"), nil
}
