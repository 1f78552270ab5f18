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
	// OnReported is called once a day's reports were sent.
	OnReported func()
	// CheckEvery is how often Run looks for due reports and retries
	// (default 10 min).
	CheckEvery time.Duration
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

// Undelivered is one report delivery that failed.
type Undelivered struct {
	Plan  *Planned
	RUA   string
	Err   error
	Tries int
}

// Send delivers every planned report to each of its rua URIs and returns
// how many deliveries succeeded and those that failed.
func (r *Reporter) Send(ctx context.Context, plans []Planned) (sent int, failed []Undelivered) {
	for i := range plans {
		for _, rua := range plans[i].RUAs {
			if err := r.Sender.Send(ctx, rua, plans[i].Report, plans[i].Gzip); err != nil {
				failed = append(failed, Undelivered{Plan: &plans[i], RUA: rua, Err: err, Tries: 1})
				continue
			}
			sent++
		}
	}
	return sent, failed
}

// maxTries is how often Run tries a delivery (every checkEvery) before
// giving up on it.
const maxTries = 6

// checkEvery is how often Run looks whether a day's reports are due.
const checkEvery = 10 * time.Minute

// Run sends, once after each UTC midnight, the reports of the day before
// (and of up to maxCatchUp earlier days not reported while the daemon was
// down) from the tracker's counts, and records that day as reported (saved with
// the tracker's state, so a restart does not send them twice; OnReported,
// if set, is called then, e.g. to save it at once). A delivery that fails
// is tried again every checkEvery, maxTries times in all.
func (r *Reporter) Run(ctx context.Context, t *outbound.Tracker) {
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	now := r.Now
	if now == nil {
		now = time.Now
	}
	var retry []Undelivered
	for {
		var again []Undelivered
		for _, u := range retry {
			if err := r.Sender.Send(ctx, u.RUA, u.Plan.Report, u.Plan.Gzip); err != nil {
				u.Err, u.Tries = err, u.Tries+1
				if u.Tries < maxTries {
					again = append(again, u)
				} else {
					log.Warn("tlsrpt: report not delivered; giving up", "domain", u.Plan.Domain, "rua", u.RUA, "tries", u.Tries, "error", err)
				}
				continue
			}
			log.Info("tlsrpt: report delivered on a later try", "domain", u.Plan.Domain, "rua", u.RUA, "tries", u.Tries+1)
		}
		retry = again
		for _, day := range dueDays(t.Reported(), now()) {
			plans, failed := r.Plan(ctx, day, t.Day(day))
			for d, err := range failed {
				log.Warn("tlsrpt: no report for a domain: its _smtp._tls lookup failed", "domain", d, "day", day, "error", err)
			}
			sent, undelivered := r.Send(ctx, plans)
			for _, u := range undelivered {
				log.Warn("tlsrpt: report not delivered; trying again later", "domain", u.Plan.Domain, "rua", u.RUA, "day", day, "error", u.Err)
			}
			retry = append(retry, undelivered...)
			log.Info("tlsrpt: reports sent", "day", day, "domains", len(plans), "deliveries", sent, "failed", len(undelivered))
			t.SetReported(day)
			if r.OnReported != nil {
				r.OnReported()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.every()):
		}
	}
}

// maxCatchUp is how many past days Run reports after the daemon was down
// over midnight.
const maxCatchUp = 7

// dueDays returns the UTC days whose reports are due at now, oldest first:
// those after reported up to yesterday (at most maxCatchUp of them), or
// yesterday alone when nothing was reported yet.
func dueDays(reported string, now time.Time) []string {
	yesterday := now.UTC().AddDate(0, 0, -1)
	last, err := time.Parse(time.DateOnly, reported)
	if err != nil || reported == "" {
		return []string{yesterday.Format(time.DateOnly)}
	}
	var days []string
	for d := last.AddDate(0, 0, 1); !d.After(yesterday); d = d.AddDate(0, 0, 1) {
		days = append(days, d.Format(time.DateOnly))
	}
	if len(days) > maxCatchUp {
		days = days[len(days)-maxCatchUp:]
	}
	return days
}

func (r *Reporter) every() time.Duration {
	if r.CheckEvery > 0 {
		return r.CheckEvery
	}
	return checkEvery
}
