package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tlspolicyd/tlspolicyd/web"
)

// printFleet asks the daemon for its fleet (/api/fleet) and writes the
// nodes and the fleet's latest events, each with the node that saw it.
func printFleet(ctx context.Context, out io.Writer, client *http.Client, base string) error {
	body, err := fetchAPI(ctx, client, base, "/api/fleet")
	if err != nil {
		return err
	}
	var v web.FleetView
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s: /api/fleet answered something that is not a fleet: %w", base, err)
	}
	state := "up"
	if !v.Up {
		state = "DOWN (this node answers from its own state; " + fmt.Sprint(v.Queued) + " writes wait)"
	}
	fmt.Fprintf(out, "\nFleet, seen from %s: link %s since %s\n", v.Node, state, v.Since.UTC().Format(reportTime))
	if v.ReadError != "" {
		fmt.Fprintf(out, "  the shared cache could not be read: %s\n", v.ReadError)
	}
	for _, n := range v.Nodes {
		fmt.Fprintf(out, "  node %-20s running since %s, last heartbeat %s ago\n", n.Node,
			n.Started.UTC().Format(reportTime), time.Since(n.LastSeen).Round(time.Second))
	}
	evs := web.DecodeFleetEvents(v.Events)
	if len(evs) == 0 {
		fmt.Fprintln(out, "  no fleet event")
		return nil
	}
	fmt.Fprintf(out, "Latest %d fleet events, newest first:\n", len(evs))
	for _, e := range evs {
		fmt.Fprintf(out, "  %s  %-12s %-22s %s %s\n", e.Time.UTC().Format(reportTime), e.Node, e.Kind, e.Domain, e.Reason)
	}
	return nil
}
