package socketmap

import "context"

// Status is the kind of a socketmap reply.
type Status int

// Reply statuses, as named by socketmap_table(5).
const (
	// StatusOK carries the lookup result in Reply.Data.
	StatusOK Status = iota
	// StatusNotFound means the key is not in the table.
	StatusNotFound
	// StatusTemp is a temporary error: Postfix defers the mail.
	StatusTemp
	// StatusTimeout is a timeout error: Postfix defers the mail.
	StatusTimeout
	// StatusPerm is a permanent (configuration) error: Postfix defers the
	// mail and logs a warning.
	StatusPerm
)

// String returns the protocol word for s ("OK", "NOTFOUND", …).
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusNotFound:
		return "NOTFOUND"
	case StatusTemp:
		return "TEMP"
	case StatusTimeout:
		return "TIMEOUT"
	case StatusPerm:
		return "PERM"
	}
	return "TEMP"
}

// Reply is the answer to one lookup. Data is the OK result or the reason
// of an error; it is ignored for StatusNotFound.
type Reply struct {
	Status Status
	Data   string
}

// Handler answers socketmap lookups. mapName is the map name exactly as
// Postfix sent it; key is the key as sent (the handler does any case folding).
// A non-nil error is answered as TEMP (fail closed).
type Handler interface {
	Lookup(ctx context.Context, mapName, key string) (Reply, error)
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, mapName, key string) (Reply, error)

// Lookup calls f.
func (f HandlerFunc) Lookup(ctx context.Context, mapName, key string) (Reply, error) {
	return f(ctx, mapName, key)
}

var _ Handler = HandlerFunc(nil)
