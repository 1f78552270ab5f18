package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPreCommitHook installs examples/git-hooks/pre-commit in a real git
// repository holding a policy table: a commit of an invalid table is
// refused with file:line errors naming repository paths, a valid one goes
// through. The test binary stands in for tlspolicyd on PATH.
func TestPreCommitHook(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	bin := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wrapper := "#!/bin/sh\nTLSPOLICYD_RUN_MAIN=1 exec '" + self + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "tlspolicyd"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"),
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid")
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := git("init", "-q"); err != nil {
		t.Fatal(out)
	}
	hook, err := os.ReadFile("../../examples/git-hooks/pre-commit")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, ".git", "hooks", "pre-commit"), hook, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(body string) {
		if err := os.WriteFile(filepath.Join(repo, "partners.yaml"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	write("outbound:\n  bank.example: encrypt\n  lawfirm.example: encrpyt\n")
	_, _ = git("add", "partners.yaml")
	out, err := git("commit", "-q", "-m", "bad")
	if err == nil {
		t.Fatalf("commit of an invalid table went through:\n%s", out)
	}
	if !strings.Contains(out, "partners.yaml:3: error: ") || !strings.Contains(out, `"encrpyt"`) || strings.Contains(out, os.TempDir()) {
		t.Errorf("hook output should name partners.yaml:3 (a repository path):\n%s", out)
	}

	write("outbound:\n  bank.example: encrypt\n  lawfirm.example: encrypt\n")
	_, _ = git("add", "partners.yaml")
	if out, err := git("commit", "-q", "-m", "good"); err != nil {
		t.Fatalf("commit of a valid table refused: %v\n%s", err, out)
	}

	// The hook judges what is staged, not the working tree.
	write("outbound:\n  bank.example: bogus\n")
	if out, err := git("commit", "-q", "--allow-empty", "-m", "unstaged breakage"); err != nil {
		t.Errorf("an unstaged broken edit blocked the commit:\n%s", out)
	}

	// A warning (a passed review_by) lets the commit through, unless
	// TLSPOLICYD_CHECK_ARGS=--strict makes warnings fail.
	write("outbound:\n  bank.example:\n    policy: encrypt\n    review_by: 2020-01-31\n")
	_, _ = git("add", "partners.yaml")
	env = append(env, "TLSPOLICYD_CHECK_ARGS=--strict")
	out, err = git("commit", "-q", "-m", "warning, strict")
	if err == nil || !strings.Contains(out, "partners.yaml:2: warning: review_by 2020-01-31 has passed") || !strings.Contains(out, "--strict") {
		t.Errorf("with --strict a commit with a warning went through or said nothing of it (%v):\n%s", err, out)
	}
	env = env[:len(env)-1]
	if out, err := git("commit", "-q", "-m", "warning"); err != nil || !strings.Contains(out, "warning: review_by") {
		t.Errorf("without --strict a warning blocked the commit or was not shown (%v):\n%s", err, out)
	}
}
