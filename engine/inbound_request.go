package engine

import (
	"net/netip"
	"strings"

	"github.com/tlspolicyd/tlspolicyd/policyd"
)

// inboundRequest is what rule evaluation reads from a policy request: the
// attributes as sent, and the forms rules match against, normalised once
// by fromRequest.
type inboundRequest struct {
	Sender, Recipient         string
	ClientAddress, ClientName string
	Protocol                  string // encryption_protocol: "" without TLS
	CertFP, PubkeyFP          string

	sender, recipient address
	client            netip.Addr // invalid when client_address is not an address
	name              string     // verified client name, lower-case; "" if none
}

// address is a sender or recipient address as rules match it.
type address struct {
	addr   string // lower-case, one trailing dot removed
	base   string // addr without its +extension; "" when it has none
	domain string // after the last "@"; "" without one
}

// parseAddress normalises a: lower-case (patterns are lower-case), one
// trailing dot removed, and the address without its +extension: with
// Postfix's usual recipient_delimiter, legal+x@ourcorp.example is the
// mailbox legal@ourcorp.example, so a rule naming the latter covers the
// former (store.resolveTransport does the same for the transport maps).
func parseAddress(a string) address {
	addr := strings.ToLower(strings.TrimSuffix(a, "."))
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return address{addr: addr}
	}
	ad := address{addr: addr, domain: addr[at+1:]}
	if j := strings.IndexByte(addr[:at], '+'); j > 0 {
		ad.base = addr[:j] + addr[at:]
	}
	return ad
}

// verifiedName returns the lower-cased verified client name; Postfix sends
// "unknown" when the name did not verify (forward-confirmed reverse DNS).
func verifiedName(n string) string {
	n = strings.ToLower(strings.TrimSuffix(n, "."))
	if n == "unknown" {
		return ""
	}
	return n
}

// fromRequest reads the attributes rules look at, and normalises them.
func fromRequest(req *policyd.Request) inboundRequest {
	in := inboundRequest{
		Sender:        req.Get("sender"),
		Recipient:     req.Get("recipient"),
		ClientAddress: req.Get("client_address"),
		ClientName:    req.Get("client_name"),
		Protocol:      req.Get("encryption_protocol"),
		CertFP:        req.Get("ccert_fingerprint"),
		PubkeyFP:      req.Get("ccert_pubkey_fingerprint"),
	}
	in.sender = parseAddress(in.Sender)
	in.recipient = parseAddress(in.Recipient)
	if a, err := netip.ParseAddr(in.ClientAddress); err == nil {
		in.client = a.Unmap()
	}
	in.name = verifiedName(in.ClientName)
	return in
}
