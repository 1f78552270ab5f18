package tlsrpt

import (
	"fmt"
	"time"

	"github.com/tlspolicyd/tlspolicyd/outbound"
)

// Report is the aggregate report of RFC 8460 §4.4.
type Report struct {
	OrganizationName string    `json:"organization-name"`
	DateRange        DateRange `json:"date-range"`
	ContactInfo      string    `json:"contact-info"`
	ReportID         string    `json:"report-id"`
	Policies         []Policy  `json:"policies"`
}

// DateRange is the UTC day the report covers.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// Policy is one policy applied to the domain's sessions and their results.
type Policy struct {
	Policy         PolicyDesc      `json:"policy"`
	Summary        Summary         `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
}

// Policy types (§4.4.1).
const (
	TypeSTS           = "sts"
	TypeTLSA          = "tlsa"
	TypeNoPolicyFound = "no-policy-found"
)

// PolicyDesc names the policy: its type, its text as served (lines of the
// MTA-STS policy, TLSA records) and the domain it is for.
type PolicyDesc struct {
	Type   string   `json:"policy-type"`
	String []string `json:"policy-string,omitempty"`
	Domain string   `json:"policy-domain"`
	MXHost []string `json:"mx-host,omitempty"`
}

// Summary counts the sessions (§4.4.2).
type Summary struct {
	Successful int64 `json:"total-successful-session-count"`
	Failed     int64 `json:"total-failure-session-count"`
}

// FailureDetail is one kind of failure towards one MX (§4.4.3).
type FailureDetail struct {
	ResultType            string `json:"result-type"`
	SendingMTAIP          string `json:"sending-mta-ip,omitempty"`
	ReceivingMXHostname   string `json:"receiving-mx-hostname,omitempty"`
	ReceivingIP           string `json:"receiving-ip,omitempty"`
	FailedSessionCount    int64  `json:"failed-session-count"`
	AdditionalInformation string `json:"additional-information,omitempty"`
	FailureReasonCode     string `json:"failure-reason-code,omitempty"`
}

// PolicyInfo is what the sending side applied to a domain.
type PolicyInfo struct {
	Type   string // TypeSTS, TypeTLSA or TypeNoPolicyFound
	String []string
	MXHost []string
}

// Meta says who reports.
type Meta struct {
	Organization string // organization-name
	Contact      string // contact-info
	Submitter    string // the host name in the report id, subject and file name
}

// Build returns the report of one domain's UTC day (day "2006-01-02").
func Build(m Meta, domain, day string, c outbound.Counts, p PolicyInfo) (Report, error) {
	start, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return Report{}, fmt.Errorf("tlsrpt: day %q: %w", day, err)
	}
	if p.Type == "" {
		p.Type = TypeNoPolicyFound
	}
	pol := Policy{
		Policy:  PolicyDesc{Type: p.Type, String: p.String, Domain: domain, MXHost: p.MXHost},
		Summary: Summary{Successful: int64(c.SessionsOK), Failed: int64(c.SessionsFailed)},
	}
	for _, f := range c.Failures {
		pol.FailureDetails = append(pol.FailureDetails, FailureDetail{ResultType: f.ResultType, ReceivingMXHostname: f.MXHost,
			ReceivingIP: f.MXAddr, FailedSessionCount: int64(f.Count), FailureReasonCode: f.Detail})
	}
	return Report{
		OrganizationName: m.Organization,
		DateRange:        DateRange{Start: start.UTC(), End: start.Add(24*time.Hour - time.Second).UTC()},
		ContactInfo:      m.Contact,
		ReportID:         fmt.Sprintf("%sT00:00:00Z_%s@%s", day, domain, m.Submitter),
		Policies:         []Policy{pol},
	}, nil
}

// FileName is the report's file name (§5.1):
// submitter!policy-domain!begin-timestamp!end-timestamp.json.gz.
func (r Report) FileName(submitter string) string {
	return fmt.Sprintf("%s!%s!%d!%d.json.gz", submitter, r.Policies[0].Policy.Domain, r.DateRange.Start.Unix(), r.DateRange.End.Unix())
}
