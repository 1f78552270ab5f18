package exim

import (
	"context"
	"fmt"
	"strings"
)

// Submit queues a message from sender to rcpts without delivering it
// (exim -odq, as a local submission; -oi: a lone dot does not end it),
// with the macros defines. The body is a small message with subject.
func (x *Instance) Submit(ctx context.Context, defines map[string]string, sender string, rcpts []string, subject string) error {
	msg := fmt.Sprintf("From: <%s>\nTo: <%s>\nSubject: %s\n\nbody of %s\n",
		sender, strings.Join(rcpts, ">, <"), subject, subject)
	args := append([]string{"-odq", "-oi", "-f", sender, "--"}, rcpts...)
	res, err := x.Run(ctx, defines, msg, args...)
	if err != nil {
		return err
	}
	if res.Code != 0 {
		return fmt.Errorf("exim -odq %s: %s", strings.Join(rcpts, " "), res)
	}
	return nil
}

// QueueRun starts one queue runner (exim -q) with defines and waits until it
// has made a delivery attempt for every message whose retry time has come
// (here: all messages never tried), as the daemon's periodic runner would.
func (x *Instance) QueueRun(ctx context.Context, defines map[string]string) error {
	res, err := x.Run(ctx, defines, "", "-q")
	if err != nil {
		return err
	}
	if res.Code != 0 {
		return fmt.Errorf("exim -q: %s", res)
	}
	return nil
}

// Queued returns the recipients still waiting for delivery in the spool
// (exim -bp lists each message's undelivered recipients, indented; the
// delivered ones are marked "D").
func (x *Instance) Queued(ctx context.Context) ([]string, error) {
	res, err := x.Run(ctx, nil, "", "-bp")
	if err != nil {
		return nil, err
	}
	if res.Code != 0 {
		return nil, fmt.Errorf("exim -bp: %s", res)
	}
	var rcpts []string
	for _, l := range strings.Split(res.Stdout, "\n") {
		f := strings.Fields(l)
		if len(f) == 1 && strings.HasPrefix(l, " ") {
			rcpts = append(rcpts, f[0])
		}
	}
	return rcpts, nil
}
