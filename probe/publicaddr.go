package probe

import "net/netip"

// Ranges refused besides what netip classifies: from the IANA
// special-purpose address registries (not globally reachable), and
// deprecated IPv6 forms. Documentation ranges are left alone: they are not
// routed, and tests use them as stand-ins for public addresses.
var extraPrivate = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // shared address space, carrier-grade NAT (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking (RFC 2544), used inside some networks
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and the broadcast address
	netip.MustParsePrefix("::/96"),          // IPv4-compatible IPv6 (deprecated), ::, ::1
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64 (RFC 8215)
	netip.MustParsePrefix("100::/64"),       // discard-only (RFC 6666)
	netip.MustParsePrefix("fec0::/10"),      // site-local (deprecated)
}

// embedsV4 are IPv6 ranges whose addresses carry an IPv4 address that a
// translator or relay may deliver to: that IPv4 address must be public
// too, or 64:ff9b::7f00:1 reaches 127.0.0.1 through NAT64.
var embedsV4 = []struct {
	prefix netip.Prefix
	at     int  // byte offset of the IPv4 address
	xor    bool // stored inverted (Teredo client address)
}{
	{netip.MustParsePrefix("64:ff9b::/96"), 12, false},    // NAT64 well-known prefix (RFC 6052)
	{netip.MustParsePrefix("::ffff:0:0:0/96"), 12, false}, // IPv4-translated (SIIT, RFC 7915)
	{netip.MustParsePrefix("2002::/16"), 2, false},        // 6to4 (RFC 3056)
	{netip.MustParsePrefix("2001::/32"), 4, false},        // Teredo server (RFC 4380)
	{netip.MustParsePrefix("2001::/32"), 12, true},        // Teredo client
}

// publicAddr reports whether a may be probed without AllowPrivate: not
// loopback, private (RFC 1918, fc00::/7), link-local, multicast,
// unspecified or otherwise special-purpose (extraPrivate), and not an IPv6
// address standing for such an IPv4 address (IPv4-mapped, NAT64, 6to4,
// Teredo).
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() ||
		a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || a.IsMulticast() ||
		a.IsUnspecified() {
		return false
	}
	for _, p := range extraPrivate {
		if p.Contains(a) {
			return false
		}
	}
	if a.Is6() {
		b := a.As16()
		for _, e := range embedsV4 {
			if !e.prefix.Contains(a) {
				continue
			}
			v4 := [4]byte(b[e.at : e.at+4])
			if e.xor {
				for i := range v4 {
					v4[i] ^= 0xff
				}
			}
			if !publicAddr(netip.AddrFrom4(v4)) {
				return false
			}
		}
	}
	return true
}
