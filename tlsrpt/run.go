package tlsrpt

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/dnsq"
	"github.com/tlspolicyd/tlspolicyd/outbound"
)

// Reporter plans and sends a day's reports.
type Reporter struct {
	Meta   Meta
	Sender *Sender
	DNS    *dnsq.Client
	// Policy says what policy was applied to a domain (default: none found).
	Policy func(ctx context.Context, domain string) PolicyInfo
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Planned is one domain's report and where it goes.
type Planned struct {
	Domain string
	RUAs   []string
	Report Report
	JSON   []byte
	Gzip   []byte
}

// Plan builds the reports of day for every domain in counts that had SMTP
// sessions and publishes a TLSRPTv1 record. Domains whose lookup failed
// are returned in failed.
func (r *Reporter) Plan(ctx context.Context, day string, counts map[string]outbound.Counts) (plans []Planned, failed map[string]error) {
	failed = map[string]error{}
	domains := make([]string, 0, len(counts))
	for d, c := range counts {
		if d != outbound.OtherDomain && c.SessionsOK+c.SessionsFailed > 0 {
			domains = append(domains, d)
		}
	}
	sort.Strings(domains)
	for _, d := range domains {
		ruas, err := Lookup(ctx, r.DNS, d)
		if errors.Is(err, ErrNoRecord) {
			continue
		}
		if err != nil {
			failed[d] = err
			continue
		}
		p := PolicyInfo{Type: TypeNoPolicyFound}
		if r.Policy != nil {
			p = r.Policy(ctx, d)
		}
		rep, err := Build(r.Meta, d, day, counts[d], p)
		if err != nil {
			failed[d] = err
			continue
		}
		js, gz, err := Encode(rep)
		if err != nil {
			failed[d] = err
			continue
		}
		plans = append(plans, Planned{Domain: d, RUAs: ruas, Report: rep, JSON: js, Gzip: gz})
	}
	return plans, failed
}

// Send delivers every planned report to each of its rua URIs and returns
// how many deliveries succeeded and the errors of those that failed.
func (r *Reporter) Send(ctx context.Context, plans []Planned) (sent int, errs []error) {
	for _, p := range plans {
		for _, rua := range p.RUAs {
			if err := r.Sender.Send(ctx, rua, p.Report, p.Gzip); err != nil {
				errs = append(errs, err)
				continue
			}
			sent++
		}
	}
	return sent, errs
}

// checkEvery is how often Run looks whether a day's reports are due.
const checkEvery = 10 * time.Minute

// Run sends, once after each UTC midnight, the reports of the day before
// from the tracker's counts, and records that day as reported (saved with
// the tracker's state, so a restart does not send them twice).
func (r *Reporter) Run(ctx context.Context, t *outbound.Tracker) {
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	now := r.Now
	if now == nil {
		now = time.Now
	}
	for {
		yesterday := now().UTC().AddDate(0, 0, -1).Format(time.DateOnly)
		if t.Reported() < yesterday {
			plans, failed := r.Plan(ctx, yesterday, t.Day(yesterday))
			for d, err := range failed {
				log.Warn("tlsrpt: no report for a domain: its _smtp._tls lookup failed", "domain", d, "day", yesterday, "error", err)
			}
			sent, errs := r.Send(ctx, plans)
			for _, err := range errs {
				log.Warn("tlsrpt: report not delivered", "day", yesterday, "error", err)
			}
			log.Info("tlsrpt: reports sent", "day", yesterday, "domains", len(plans), "deliveries", sent, "failed", len(errs))
			t.SetReported(yesterday)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(checkEvery):
		}
	}
}
