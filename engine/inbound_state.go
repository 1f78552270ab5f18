package engine

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/tlspolicyd/tlspolicyd/policyd"
)

// A policy request is answered only when it is what SMTPD_POLICY_README
// describes: request=smtpd_access_policy in a known SMTP protocol state.
// Anything else cannot be decided and gets DUNNO, with one warning a kind
// per process (a misconfigured client would otherwise log every request).

// protocolStates are the states Postfix's smtpd sends (SMTPD_POLICY_README).
var protocolStates = map[string]bool{
	"CONNECT": true, "EHLO": true, "HELO": true, "MAIL": true, "RCPT": true,
	"DATA": true, "END-OF-MESSAGE": true, "VRFY": true, "ETRN": true,
}

// requestWarnings remembers which kinds of undecidable request were logged.
type requestWarnings struct {
	notPolicy, unknownState atomic.Bool
}

// protocolState returns req's protocol state, and false when req cannot
// be decided; the first request of each such kind is logged.
func (e *Engine) protocolState(ctx context.Context, req *policyd.Request) (string, bool) {
	if r := req.Get("request"); r != "smtpd_access_policy" {
		if !e.warned.notPolicy.Swap(true) {
			e.log.LogAttrs(ctx, slog.LevelWarn, "policy request without request=smtpd_access_policy answered DUNNO (logged once)",
				slog.String("request", sanitize(r)))
		}
		return "", false
	}
	st := req.Get("protocol_state")
	if !protocolStates[st] {
		if !e.warned.unknownState.Swap(true) {
			e.log.LogAttrs(ctx, slog.LevelWarn, "policy request with an unknown protocol_state answered DUNNO (logged once)",
				slog.String("protocol_state", sanitize(st)))
		}
		return "", false
	}
	return st, true
}
