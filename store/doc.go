// Package store is tlspolicyd's policy table: it parses and validates the
// YAML table (DESIGN.md §4) and the Postfix tls_policy files it includes,
// builds an immutable Store from it, and resolves the socketmap lookups of
// Postfix's smtp_tls_policy_maps, transport_maps and
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
//
// # What a Store holds, and why
//
// Entries (outbound, recipients, senders) are found through a keyIndex
// (keyindex.go): an open-addressing hash table of uint64 slots over the
// Table's own entry lists, which serves resolution and OutboundByKey,
// RecipientByKey and SenderByKey. Each distinct policy text is parsed
// once and its *Policy shared by every entry that has it; its answers for
// the four floors (tls_policy, tls_policy_encrypt/verify/secure) are
// computed once per distinct policy.
//
// go-memdb holds what needs an indexed, transactional view and is small
// (schema.go): the table's files, its distinct policies (by text and by
// level), its inbound rules (by name) and its testing entries, in the
// style of nomad's state store. Nothing on the lookup path reads it, so a
// Store builds it when one of its readers (InboundRuleByName,
// TestingEntries, Files, Policies) is first called, not during a reload.
// It used to hold every entry, in two
// indexes each, and that did not scale: go-immutable-radix keeps a node,
// a leaf and a mutation channel per key and index, and a transaction of
// many inserts keeps copying nodes once its writable-node cache (8,192
// nodes) is full.
//
// Measured with a generated table of 1,000,000 outbound entries (eight
// distinct policies, BenchmarkLoadDir and tlspolicyd-bench -steps mem, on
// a 2-core VM):
//
//	                             every entry in go-memdb   now
//	Store's live heap            1,219 MB                  137 MB
//	  per entry                  1,279 B                   144 B
//	  go-memdb radix trees       790 MB (≈ 395 B per       4.5 MB once read (10,000
//	                             key and index)            rules), nothing per entry
//	  *Policy per entry          113 MB                    shared: 8 in all
//	  floor answers per entry    112 MB                    shared: 8 in all
//	Load (parse, build)          20.4 s                    2.3 s
//	  allocated                  2.75 GB, 40.6 M objects   0.91 GB, 8.8 M objects
//	daemon VmRSS after start     1,457 MB                  ≈ 200 MB
//
// The 144 bytes per entry now are the Entry itself (96), its key (16–24),
// its pointer in the Table's list (8), its keyIndex slots (16 at half
// load) and the position of its policy's answers (4). For 100,000
// entries BenchmarkBuild went from 263 ms and 132 MB allocated to 9 ms
// and 2 MB; Build of a table LoadTable parsed reuses the key indexes the
// parser made to find duplicates (0.05 s for 1,000,000 entries).
//
// Most of what a load allocates is YAML nodes (go.yaml.in/yaml/v3 decodes
// a document into a tree before it can be walked), and decoding them is
// most of its CPU time. LoadTable therefore parses the files of a table
// directory in parallel (see loadFiles for how it keeps errors, duplicate
// reports and results identical to a sequential load); the engine's
// Reloader returns that memory to the operating system after each load.
package store
