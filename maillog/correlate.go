package maillog

import (
	"strings"
	"time"
)

// Session is a TLS session of one smtp process, from its TLS line.
type Session struct {
	Peer     Endpoint
	Trust    string
	Protocol string
	Cipher   string
	// VerifyDetail is the "certificate verification failed" text logged
	// just before the TLS line, if any.
	VerifyDetail string
}

// Delivery is one status line with what the same smtp session said about
// TLS.
type Delivery struct {
	Time    time.Time
	QueueID string
	To      string
	Domain  string // of To, lower case
	Relay   Endpoint
	DSN     string
	Status  string // sent, deferred, bounced, expired, …
	Text    string
	Reason  Reason   // ReasonNone when sent
	TLS     *Session // nil: the session logged no TLS line (clear text or no connection)
	// VerifyDetail is the session's "certificate verification failed"
	// text, if it logged one.
	VerifyDetail string
	// NewSession is true for the first status line of an SMTP session
	// (TLS-RPT counts sessions, not recipients).
	NewSession bool
}

// maxProcs bounds the per-process state: smtp processes come and go (and
// pids are reused), and a process whose session ended without a status
// line (crash, kill) must not leak.
const maxProcs = 4096

type proc struct {
	session *Session
	verify  string   // the pending verification failure of the next TLS line
	vpeer   Endpoint // its peer
	used    bool     // a status line was matched to session already
	seen    time.Time
}

// Correlator turns a stream of Lines into Deliveries. It is not safe for
// concurrent use.
type Correlator struct {
	procs map[int]*proc
}

// NewCorrelator returns an empty Correlator.
func NewCorrelator() *Correlator { return &Correlator{procs: map[int]*proc{}} }

// Pending is a process's open TLS session and a verification failure
// waiting for its TLS line: the state a restart must carry over, since a
// session's TLS line and its status lines may fall on either side of it.
type Pending struct {
	PID        int       `json:"pid"`
	Session    *Session  `json:"session,omitempty"`
	Verify     string    `json:"verify,omitempty"`
	VerifyPeer Endpoint  `json:"verify_peer,omitempty"`
	Used       bool      `json:"used,omitempty"`
	Seen       time.Time `json:"seen"`
}

// Pending returns the per-process state (for saving).
func (c *Correlator) Pending() []Pending {
	out := make([]Pending, 0, len(c.procs))
	for pid, p := range c.procs {
		if p.session == nil && p.verify == "" {
			continue
		}
		out = append(out, Pending{PID: pid, Session: p.session, Verify: p.verify, VerifyPeer: p.vpeer, Used: p.used, Seen: p.seen})
	}
	return out
}

// Restore puts back what Pending returned (before any line is fed).
func (c *Correlator) Restore(ps []Pending) {
	for _, q := range ps {
		if q.PID <= 0 || len(c.procs) >= maxProcs {
			continue
		}
		c.procs[q.PID] = &proc{session: q.Session, verify: q.Verify, vpeer: q.VerifyPeer, used: q.Used, seen: q.Seen}
	}
}

// Result is what one line gave.
type Result struct {
	Delivery  *Delivery // a status line
	Malformed bool      // a TLS-looking line that did not parse
}

// Feed reads one line. Lines from programs other than smtp/lmtp (and qmgr's
// "address resolver failure" status lines) give nothing.
func (c *Correlator) Feed(l Line) Result {
	svc := l.Service()
	switch svc {
	case "smtp", "lmtp":
	case "qmgr", "error":
		// Their status lines have no session: relay=none.
		m := ParseMessage(l.Msg)
		if m.Kind != Status {
			return Result{}
		}
		return Result{Delivery: c.delivery(l, m, nil)}
	default:
		return Result{}
	}
	m := ParseMessage(l.Msg)
	switch m.Kind {
	case Malformed:
		return Result{Malformed: true}
	case TLSSession:
		p := c.proc(l)
		p.session = &Session{Peer: m.Peer, Trust: m.Trust, Protocol: m.Protocol, Cipher: m.Cipher}
		if p.verify != "" && sameRelay(p.vpeer, m.Peer) {
			p.session.VerifyDetail = p.verify
		}
		p.used, p.verify = false, ""
	case VerifyFailed:
		p := c.proc(l)
		p.session, p.verify, p.vpeer = nil, m.Detail, m.Peer
	case Status:
		p := c.procs[l.PID]
		return Result{Delivery: c.delivery(l, m, p)}
	}
	return Result{}
}

func (c *Correlator) proc(l Line) *proc {
	p := c.procs[l.PID]
	if p == nil {
		if len(c.procs) >= maxProcs {
			c.evict()
		}
		p = &proc{}
		c.procs[l.PID] = p
	}
	p.seen = l.Time
	return p
}

// evict drops the least recently seen half of the processes.
func (c *Correlator) evict() {
	var times []time.Time
	for _, p := range c.procs {
		times = append(times, p.seen)
	}
	// The median without sorting everything is not worth it at this size.
	var cut time.Time
	for _, t := range times {
		n := 0
		for _, u := range times {
			if u.Before(t) {
				n++
			}
		}
		if n >= len(times)/2 {
			cut = t
			break
		}
	}
	for pid, p := range c.procs {
		if p.seen.Before(cut) || p.seen.Equal(cut) {
			delete(c.procs, pid)
		}
	}
}

func (c *Correlator) delivery(l Line, m Message, p *proc) *Delivery {
	d := &Delivery{Time: l.Time, QueueID: m.QueueID, To: m.To, Domain: domainOf(m.To), Relay: m.Peer,
		DSN: m.DSN, Status: m.Status, Text: m.Text, NewSession: true}
	if m.Status != "sent" {
		d.Reason = Classify(m.Text)
	}
	if p != nil && m.Peer.Addr != "" {
		switch {
		case p.session != nil && sameRelay(p.session.Peer, m.Peer):
			s := *p.session
			d.TLS, d.NewSession, d.VerifyDetail = &s, !p.used, s.VerifyDetail
			p.used = true
		case p.verify != "" && sameRelay(p.vpeer, m.Peer):
			d.VerifyDetail = p.verify
			p.verify = ""
		default:
			// Another relay: the process's TLS session (if any) is over.
			p.session, p.verify = nil, ""
		}
	}
	return d
}

func sameRelay(a, b Endpoint) bool {
	return strings.EqualFold(a.Host, b.Host) && a.Addr == b.Addr && (a.Port == b.Port || a.Port == "" || b.Port == "")
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
	}
	return ""
}
