package probe

import "net/netip"

// PublicAddr reports whether a is a public unicast address: the guard the
// prober applies without AllowPrivate, shared with the MTA-STS policy
// fetcher so both refuse the same addresses.
func PublicAddr(a netip.Addr) bool { return publicAddr(a) }
