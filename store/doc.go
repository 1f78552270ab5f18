// Package store is tlspolicyd's policy table: it parses and validates the
// YAML table (DESIGN.md §4) and the Postfix tls_policy files it includes,
// keeps the result in an immutable go-memdb database, and resolves the
// socketmap lookups of Postfix's smtp_tls_policy_maps, transport_maps and
// sender_dependent_default_transport_maps (DESIGN.md §5).
//
// Policy strings are validated the way Postfix 3.7 parses them
// (postconf(5) smtp_tls_policy_maps, src/smtp/smtp_tls_policy.c), so a
// table that loads here never makes Postfix defer mail with "client TLS
// configuration problem" because of a typo.
//
// A Store is built once from a complete Table and never mutated: a reload
// builds a new Store and the engine swaps one pointer, so a lookup sees the
// old table or the new one, never a mix.
package store
