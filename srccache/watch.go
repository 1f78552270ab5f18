package srccache

// Watch is what the monitor remembers of one monitored key between its
// checks (KindWatch records).
type Watch struct{}
