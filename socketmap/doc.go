// Package socketmap implements the server side of Postfix's socketmap
// lookup protocol, as described in socketmap_table(5) and implemented by
// Postfix's client in src/util/dict_sockmap.c. Postfix uses it here for
// smtp_tls_policy_maps and for transport and sender-dependent maps; Exim
// speaks it through ${readsocket}.
//
// # Protocol
//
// A request is the netstring "<len>:<map> <key>," — the map name exactly as
// configured, one space, the key (possibly empty: the null sender). A reply
// is the netstring "OK <data>", "NOTFOUND ", "TEMP <reason>",
// "TIMEOUT <reason>" or "PERM <reason>", at most MaxReplySize bytes.
// Decoder, AppendNetstring and AppendReply are the codec;
// the decoder is strict (digits only, no leading zeros, ':' and ',' required,
// the length capped before anything is read or allocated) because a
// netstring stream cannot be resynchronised after an error.
//
// # Server
//
// Server reads requests on persistent connections (Postfix keeps one per
// smtp process for 100 s and more), answers pipelined requests in order,
// answers a request followed by EOF before closing (Exim writes one request
// and half-closes), and closes a connection on a malformed netstring after
// replying "PERM bad request". It calls a Handler for each lookup and knows
// nothing of TLS policy.
//
// # Limits
//
// A client can hold little: a request's length is capped before anything
// is read or allocated (MaxRequestSize), a request must arrive within
// ReadTimeout of its first byte and a reply be taken within ReadTimeout,
// idle connections close after IdleTimeout, and MaxConns caps each
// listener's connections. At the cap a new connection replaces the
// longest idle one, else the one whose request has been arriving for
// longer than SlowRequest (a slow-loris client), else it is refused at
// once; the log says so at most once per 10 s per kind.
//
// The server fails closed: anything the Handler cannot answer — an error, a
// panic, a Lookup that overruns RequestTimeout, an OK reply Postfix would
// reject — is answered TEMP, so Postfix defers the mail rather than send it
// with a weaker policy.
package socketmap
