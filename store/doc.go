// Package store is tlspolicyd's policy table: it parses and validates the
// YAML table (docs/policy-table.md) and the Postfix tls_policy files it
// includes, builds an immutable Store from it, and resolves the socketmap
// lookups of Postfix's smtp_tls_policy_maps, transport_maps and
// sender_dependent_default_transport_maps.
//
// Policy strings are validated the way Postfix 3.7 parses them
// (postconf(5) smtp_tls_policy_maps, src/smtp/smtp_tls_policy.c), so a
// table that loads here never makes Postfix defer mail with "client TLS
// configuration problem" because of a typo.
//
// A Store is built once from a complete Table and never mutated: a reload
// builds a new Store and the engine swaps one pointer, so a lookup sees the
// old table or the new one, never a mix.
//
// # What a Store holds
//
// Entries (outbound, recipients, senders) are found through a keyIndex
// (keyindex.go): an open-addressing hash table of uint64 slots over the
// Table's own entry lists, which serves resolution and OutboundByKey.
// Each distinct policy text is parsed
// once and its *Policy shared by every entry that has it; its answers for
// the four floors (tls_policy, tls_policy_encrypt/verify/secure) are
// computed once per distinct policy.
//
// The table is not kept in go-memdb: nothing read it but tests, and a
// read transaction costs far more than a keyIndex lookup (bench/README.md).
// go-memdb holds the cache of what the daemon learns about destinations
// instead (srccache: MTA-STS, DANE, probe results, learned policies).
//
// Most of what a load allocates is YAML nodes (go.yaml.in/yaml/v3 decodes
// a document into a tree before it can be walked). LoadTable therefore
// parses the files of a table directory in parallel (parallel.go keeps
// errors, duplicate reports and results identical to a sequential load);
// the engine's Reloader returns that memory to the operating system after
// each load. bench/README.md has the measurements.
package store
