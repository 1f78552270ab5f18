package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/dane"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/probe"
)

// probeOutput is one target's probe result with, for a bare domain, what
// MTA-STS and DANE publish (the JSON keeps the probe result's fields at
// the top level and adds mta_sts and dane).
type probeOutput struct {
	*probe.Result
	MTASTS    *mtastsInfo  `json:"mta_sts,omitempty"`
	DANE      *dane.Result `json:"dane,omitempty"`
	DANEError string       `json:"dane_error,omitempty"`
}

// mtastsInfo is what an MTA-STS lookup found, like mta-sts-query shows it.
type mtastsInfo struct {
	TXTID      string         `json:"txt_id,omitempty"`
	TXTError   string         `json:"txt_error,omitempty"`
	URL        string         `json:"url,omitempty"`
	Policy     *mtasts.Policy `json:"policy,omitempty"`
	FetchError string         `json:"fetch_error,omitempty"`
	Postfix    string         `json:"postfix_policy,omitempty"` // what the daemon answers for it
}

// sourcesTimeout bounds the live DANE and MTA-STS lookups of probe.
const sourcesTimeout = 30 * time.Second

// probeSources looks up MTA-STS and DANE for a bare-domain target, as the
// daemon would, live. Other targets ([host], host:port) get nothing.
func probeSources(ctx context.Context, cfg config.Config, target string, r *probe.Result) probeOutput {
	out := probeOutput{Result: r}
	domain, ok := sourceDomainOf(target)
	if !ok {
		return out
	}
	d, f, err := sourceClients(cfg)
	if err != nil {
		out.DANEError = err.Error()
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, sourcesTimeout)
	defer cancel()
	done := make(chan struct{})
	if d != nil {
		go func() {
			defer close(done)
			res, err := d.Lookup(ctx, domain)
			out.DANE = res
			if err != nil {
				out.DANEError = err.Error()
			}
		}()
	} else {
		close(done)
	}
	if f != nil {
		info := &mtastsInfo{URL: f.URL(domain)}
		out.MTASTS = info
		id, err := f.TXT(ctx, domain)
		info.TXTID = id
		if err != nil {
			info.TXTError = err.Error()
		} else {
			p, err := f.Fetch(ctx, domain)
			info.Policy = p
			if err != nil {
				info.FetchError = err.Error()
			} else {
				info.Postfix = p.PostfixPolicy()
			}
		}
	}
	<-done
	return out
}

// sourceDomainOf returns the domain of a bare-domain probe target.
func sourceDomainOf(target string) (string, bool) {
	if strings.ContainsAny(target, "[]:@") {
		return "", false
	}
	return strings.ToLower(strings.TrimSuffix(target, ".")), strings.Contains(target, ".")
}

// printSources prints the MTA-STS and DANE part of a probe's output.
func printSources(w io.Writer, o probeOutput) {
	if o.MTASTS == nil && o.DANE == nil && o.DANEError == "" {
		return
	}
	var b bytes.Buffer
	if m := o.MTASTS; m != nil {
		switch {
		case m.TXTError != "":
			fmt.Fprintf(&b, "  MTA-STS: %s\n", m.TXTError)
		case m.FetchError != "":
			fmt.Fprintf(&b, "  MTA-STS: TXT id %s; policy %s: %s\n", m.TXTID, m.URL, m.FetchError)
		default:
			p := m.Policy
			fmt.Fprintf(&b, "  MTA-STS: TXT id %s; policy %s\n", m.TXTID, m.URL)
			fmt.Fprintf(&b, "    mode %s, max_age %d (%s), mx %s\n", p.Mode, p.MaxAge, p.MaxAgeDuration(), strings.Join(p.MX, " "))
			if m.Postfix != "" {
				fmt.Fprintf(&b, "    the daemon answers: %s\n", m.Postfix)
			} else {
				fmt.Fprintf(&b, "    the daemon answers nothing for it (mode %s enforces nothing)\n", p.Mode)
			}
			for _, mx := range o.MX {
				if !p.Matches(mx.Host) {
					fmt.Fprintf(&b, "    MX %s is not in the policy's mx list: delivery to it would defer under enforce\n", mx.Host)
				}
			}
		}
	}
	if d := o.DANE; d != nil {
		auth := "authenticated (DNSSEC)"
		if !d.MXSecure {
			auth = "not authenticated"
		}
		level := d.Level
		if level == "" {
			level = "no DANE policy"
		}
		fmt.Fprintf(&b, "  DANE: MX records %s; %s: %s\n", auth, level, d.Why)
		for _, h := range d.Hosts {
			state := "TLSA not authenticated"
			switch {
			case !h.AddrSecure:
				state = "address not authenticated, TLSA not used"
			case h.TLSASecure && len(h.TLSA) == 0:
				state = "no TLSA records (authenticated denial)"
			case h.TLSASecure:
				state = fmt.Sprintf("TLSA authenticated, %d usable", h.Usable)
			}
			fmt.Fprintf(&b, "    %s: %s\n", h.Name, state)
			for _, t := range h.TLSA {
				use := "unusable"
				if t.Usable {
					use = "usable"
				}
				fmt.Fprintf(&b, "      TLSA %d %d %d %s (%s)\n", t.Usage, t.Selector, t.MatchingType, abbrev(t.Data), use)
			}
			if h.Error != "" {
				fmt.Fprintf(&b, "      error: %s\n", h.Error)
			}
		}
	}
	if o.DANEError != "" {
		what := "DANE lookup failed"
		if strings.Contains(o.DANEError, dane.ErrTemp.Error()) {
			what += " where DNSSEC says records exist: the daemon answers TEMP"
		}
		fmt.Fprintf(&b, "  %s: %s\n", what, o.DANEError)
	}
	b.WriteString("\n")
	_, _ = w.Write(b.Bytes())
}

// abbrev shortens a hex digest for the table.
func abbrev(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}
