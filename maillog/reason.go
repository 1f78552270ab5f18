package maillog

import "strings"

// Reason classifies why a delivery was deferred or bounced.
type Reason string

// Reasons. All but ReasonOther are TLS policy reasons: the mail waits
// because of the TLS policy (or the daemon that answers it).
const (
	ReasonNone            Reason = ""                         // sent
	ReasonNotOffered      Reason = "starttls_not_offered"     // TLS is required, but was not offered by host …
	ReasonNotVerified     Reason = "certificate_not_verified" // Server certificate not verified / not trusted
	ReasonHandshake       Reason = "tls_handshake_failed"     // Cannot start TLS: handshake failure
	ReasonTLSA            Reason = "tlsa_lookup_failed"       // TLSA lookup error for …
	ReasonPolicyLookup    Reason = "tls_policy_lookup_failed" // client TLS configuration problem
	ReasonResolverFailure Reason = "address_resolver_failure" // transport_maps lookup failed (tls_transport)
	ReasonOther           Reason = "other"                    // not TLS: connection refused, 4xx reply, …
)

// Classify returns the Reason of a status line's text.
func Classify(text string) Reason {
	switch {
	case strings.Contains(text, "TLS is required, but was not offered"),
		strings.Contains(text, "TLS is required, but our TLS engine is unavailable"):
		return ReasonNotOffered
	case strings.Contains(text, "Server certificate not verified"),
		strings.Contains(text, "Server certificate not trusted"):
		return ReasonNotVerified
	case strings.Contains(text, "Cannot start TLS"), strings.Contains(text, "TLS handshake"):
		return ReasonHandshake
	case strings.Contains(text, "TLSA lookup error"):
		return ReasonTLSA
	case strings.Contains(text, "client TLS configuration problem"):
		return ReasonPolicyLookup
	case strings.Contains(text, "address resolver failure"):
		return ReasonResolverFailure
	}
	return ReasonOther
}

// TLSPolicy reports whether r is a deferral by TLS policy.
func (r Reason) TLSPolicy() bool { return r != ReasonNone && r != ReasonOther }
