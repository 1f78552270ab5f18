package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"
)

// libLogger sends go-redis's own log lines (dial retries, pool errors) to
// the daemon's log at debug level: the fleet reports the link's state
// itself, once per change, instead of a line per retry on stderr.
type libLogger struct{ log *slog.Logger }

func (l libLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}

var setLibLogger sync.Once

// quietLibrary installs libLogger. go-redis has one process-wide logger,
// so the first fleet's logger is the one used.
func quietLibrary(log *slog.Logger) {
	setLibLogger.Do(func() { redis.SetLogger(libLogger{log}) })
}
