package socketmap_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// A server answering smtp_tls_policy_maps lookups from a fixed map; Postfix
// would use it as socketmap:inet:127.0.0.1:PORT:tls_policy.
func Example() {
	policies := map[string]string{"bank.example": "secure match=nexthop"}
	srv := &socketmap.Server{
		Handler: socketmap.HandlerFunc(func(ctx context.Context, mapName, key string) (socketmap.Reply, error) {
			if mapName != "tls_policy" {
				return socketmap.Reply{Status: socketmap.StatusPerm, Data: "unknown map"}, nil
			}
			if p, ok := policies[strings.ToLower(key)]; ok {
				return socketmap.Reply{Status: socketmap.StatusOK, Data: p}, nil
			}
			return socketmap.Reply{Status: socketmap.StatusNotFound}, nil
		}),
		Logger: slog.New(slog.DiscardHandler),
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	// What postmap -q does.
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	d := socketmap.NewDecoder(bufio.NewReader(nc), socketmap.MaxReplySize)
	for _, key := range []string{"Bank.Example", "other.example"} {
		nc.Write(socketmap.AppendNetstring(nil, "tls_policy "+key))
		reply, err := d.Next()
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s -> %q\n", key, reply)
	}
	// Output:
	// Bank.Example -> "OK secure match=nexthop"
	// other.example -> "NOTFOUND "
}
