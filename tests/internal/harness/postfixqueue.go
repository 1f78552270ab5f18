package harness

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Send submits a message from sender to rcpts with sendmail and returns its
// queue ID, read from cleanup's "QID: message-id=<…>" log line (waiting up
// to 10 s for it).
func (p *Postfix) Send(ctx context.Context, sender string, rcpts []string, subject string) (string, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	msgID := hex.EncodeToString(rnd[:]) + "@tlspolicyd-test.invalid"
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s>\r\n\r\nbody of %s\r\n",
		sender, strings.Join(rcpts, ">, <"), subject, msgID, subject)
	args := append([]string{"-f", sender, "--"}, rcpts...)
	if _, err := p.command(ctx, msg, "sendmail", args...); err != nil {
		return "", err
	}
	var qid string
	needle := ": message-id=<" + msgID + ">"
	if !WaitFor(ctx, 10*time.Second, func() bool {
		qid = findQID(p.Log(), needle)
		return qid != ""
	}) {
		return "", fmt.Errorf("message %s not picked up within 10 s", msgID)
	}
	return qid, nil
}

// findQID returns the queue ID in front of needle in a maillog line
// ("… postfix/cleanup[123]: 4ABCD12345: message-id=<…>").
func findQID(log, needle string) string {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		line, _, ok := strings.Cut(sc.Text(), needle)
		if !ok {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i >= 0 {
			return line[i+1:]
		}
	}
	return ""
}

// QueueEntry is one message in `postqueue -j` output.
type QueueEntry struct {
	QueueName  string           `json:"queue_name"`
	QueueID    string           `json:"queue_id"`
	Sender     string           `json:"sender"`
	Recipients []QueueRecipient `json:"recipients"`
}

// QueueRecipient is a recipient not yet delivered, with the reason of its
// last deferral (empty before the first attempt).
type QueueRecipient struct {
	Address     string `json:"address"`
	DelayReason string `json:"delay_reason"`
}

// Queue returns the queue as `postqueue -j` lists it.
func (p *Postfix) Queue(ctx context.Context) ([]QueueEntry, error) {
	res, err := p.command(ctx, "", "postqueue", "-j")
	if err != nil {
		return nil, err
	}
	var out []QueueEntry
	for line := range strings.Lines(res.Stdout) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var e QueueEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return nil, fmt.Errorf("postqueue -j: parse %q: %w", line, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Entry returns the queue entry qid; ok is false when it left the queue.
func (p *Postfix) Entry(ctx context.Context, qid string) (e QueueEntry, ok bool, err error) {
	q, err := p.Queue(ctx)
	if err != nil {
		return QueueEntry{}, false, err
	}
	for _, e := range q {
		if e.QueueID == qid {
			return e, true, nil
		}
	}
	return QueueEntry{}, false, nil
}

// WaitDeferred waits up to timeout until message qid sits in the deferred
// queue with rcpt among its recipients and a delay reason, and returns
// that recipient.
func (p *Postfix) WaitDeferred(ctx context.Context, qid, rcpt string, timeout time.Duration) (QueueRecipient, error) {
	var (
		got     QueueRecipient
		last    QueueEntry
		present bool
		err     error
	)
	ok := WaitFor(ctx, timeout, func() bool {
		last, present, err = p.Entry(ctx, qid)
		if err != nil || !present || last.QueueName != "deferred" {
			return err != nil
		}
		for _, r := range last.Recipients {
			if r.Address == rcpt && r.DelayReason != "" {
				got = r
				return true
			}
		}
		return false
	})
	switch {
	case err != nil:
		return QueueRecipient{}, err
	case !ok && !present:
		return QueueRecipient{}, fmt.Errorf("message %s to %s not deferred within %v: it left the queue (delivered?)", qid, rcpt, timeout)
	case !ok:
		return QueueRecipient{}, fmt.Errorf("message %s to %s not deferred within %v: queue entry %+v", qid, rcpt, timeout, last)
	}
	return got, nil
}

// WaitGone waits up to timeout until message qid has left the queue
// (delivered, or bounced).
func (p *Postfix) WaitGone(ctx context.Context, qid string, timeout time.Duration) error {
	var (
		last    QueueEntry
		present bool
		err     error
	)
	WaitFor(ctx, timeout, func() bool {
		last, present, err = p.Entry(ctx, qid)
		return err != nil || !present
	})
	switch {
	case err != nil:
		return err
	case present:
		return fmt.Errorf("message %s still queued after %v: %+v", qid, timeout, last)
	}
	return nil
}

// Flush runs `postqueue -f`: every queued message is retried at once, and
// destinations the queue manager marked dead are revived.
func (p *Postfix) Flush(ctx context.Context) error {
	_, err := p.command(ctx, "", "postqueue", "-f")
	return err
}

// Retry runs `postqueue -i qid`: message qid is retried at once.
func (p *Postfix) Retry(ctx context.Context, qid string) error {
	_, err := p.command(ctx, "", "postqueue", "-i", qid)
	return err
}
