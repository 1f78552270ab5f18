package outbound

import (
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/logfollow"
)

// BenchmarkHandler measures one line of Postfix's log through the syslog
// parser, the correlator and the tracker (the recorded log, line by line).
func BenchmarkHandler(b *testing.B) {
	lines := strings.Split(strings.TrimSpace(string(mustRead(b, "testdata/postfix37-maillog-tls.txt"))), "\n")
	tr := New(Config{Now: fixedNow})
	h := tr.Handler(false, time.UTC)
	pos := logfollow.Position{Inode: 1}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pos.Offset = int64(i)
		h(lines[i%len(lines)], pos)
	}
}
