package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// fetchProfile gets /debug/pprof/<query> from the daemon's --pprof
// listener and writes it to file in the profile directory. A failure is
// reported, not fatal: the measurements stay valid without the profile.
func (b *bench) fetchProfile(ctx context.Context, query, file, what string) {
	if b.pprofAddr == "" || b.profileDir == "" {
		return
	}
	name := filepath.Join(b.profileDir, file)
	msg := fmt.Sprintf("%s written to %s", what, name)
	if err := getProfile(ctx, "http://"+b.pprofAddr+"/debug/pprof/"+query, name); err != nil {
		msg = fmt.Sprintf("profile %s: %v", file, err)
	}
	b.profMu.Lock()
	b.profMsgs = append(b.profMsgs, msg)
	b.profMu.Unlock()
}

// printProfiles prints what fetchProfile did since the last call.
func (b *bench) printProfiles() {
	b.profMu.Lock()
	msgs := b.profMsgs
	b.profMsgs = nil
	b.profMu.Unlock()
	if slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, "CPU profile") }) {
		fmt.Fprintln(b.out, "  * a CPU profile of the daemon was taken during the step (it costs the daemon a few per cent)")
	}
	for _, m := range msgs {
		fmt.Fprintf(b.out, "  %s\n", m)
	}
}

// getProfile saves the body of url to name. CPU profiles answer after
// their sampling time, so the timeout is generous.
func getProfile(ctx context.Context, url, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("get %s: %s: %s", url, resp.Status, msg)
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("get %s: %w", url, err)
	}
	return f.Close()
}
