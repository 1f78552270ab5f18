#!/usr/bin/env bash
# test-deb.sh: build the Debian package, lint it, install it on this machine,
# run the daemon the way its unit does, answer Postfix through it, upgrade
# with an edited conffile, purge, and check that nothing is left. Needs root,
# Postfix (tests/install-deps.sh) and lintian (installed here if missing).
# .ci/run calls it; it fails loudly on the first broken check.
#
# It shares the machine with other test runs: the daemon listens on ports
# the kernel picks (never the packaged 10041-10043), is stopped on every
# exit, and a lock keeps two runs of this script from installing at once.
# systemd is not PID 1 on CI: the unit's ExecStart is run with setpriv as
# the unit's User=, and `systemd-analyze verify` checks the units.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
export DEBIAN_FRONTEND=noninteractive

checks=0
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
ok() { checks=$((checks + 1)); echo "test-deb: ok: $*"; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs the package)"
exec 9>/tmp/tlspolicyd-test-deb.lock
flock -w 900 9 || fail "another test-deb.sh holds /tmp/tlspolicyd-test-deb.lock"

apt_get() { apt-get -o DPkg::Lock::Timeout=300 -y -q "$@"; }
pkg_known() { # dpkg has it in any state but not-installed (installed, config-files, half-…)
	local status
	status=$(dpkg-query -W -f='${Status}' tlspolicyd 2>/dev/null) || return 1
	[ -n "$status" ] && [[ "$status" != *" not-installed" ]]
}
# lintian, systemd for systemd-analyze and man-db for its check of the
# units' Documentation=man:tlspolicyd(8) (a container image may lack them).
missing=""
command -v lintian >/dev/null || missing="$missing lintian"
command -v systemd-analyze >/dev/null || missing="$missing systemd"
command -v man >/dev/null || missing="$missing man-db"
if [ -n "$missing" ]; then
	apt_get update
	# shellcheck disable=SC2086
	apt_get install $missing
fi
for tool in postmap setpriv systemd-analyze lintian dpkg-deb; do
	command -v "$tool" >/dev/null || fail "$tool not found (Postfix: tests/install-deps.sh)"
done

tmp=$(mktemp -d)
daemon_pid=""
cleanup() {
	rc=$?
	if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
		kill -TERM "$daemon_pid" 2>/dev/null || true
		wait "$daemon_pid" 2>/dev/null || true
	fi
	if pkg_known; then
		apt_get purge tlspolicyd >/dev/null 2>&1 || dpkg --purge tlspolicyd >/dev/null 2>&1 || true
	fi
	if [ "$rc" -ne 0 ]; then
		echo "test-deb: FAILED (exit $rc) after $checks checks" >&2
		[ -f "$tmp/daemon.log" ] && { echo "--- daemon log" >&2; tail -n 30 "$tmp/daemon.log" >&2; }
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT

# A package left by an interrupted run would make the install an upgrade.
if pkg_known; then
	echo "test-deb: purging a tlspolicyd package left installed"
	apt_get purge tlspolicyd >/dev/null
fi

# A daemon run as root with the default paths (tests, benchmarks) creates
# /var/lib/tlspolicyd with root-owned files the packaged daemon cannot
# write: the package did not make them, so they go before it is installed.
for d in /var/lib/tlspolicyd /etc/tlspolicyd; do
	if [ -e "$d" ]; then
		echo "test-deb: removing $d, left without the package: $(ls -A "$d" | tr '\n' ' ')"
		rm -rf "$d"
	fi
done

# --- build and lint ---------------------------------------------------------
DIST="$tmp/dist1" bash packaging/build-deb.sh
deb1=$(ls "$tmp"/dist1/tlspolicyd_*.deb)
v1=$(dpkg-deb -f "$deb1" Version)
[[ "$(basename "$deb1")" == "tlspolicyd_${v1}_$(dpkg-deb -f "$deb1" Architecture).deb" ]] || fail "file name $(basename "$deb1") does not carry the version $v1"
ok "built $(basename "$deb1")"

lintian --fail-on error "$deb1" > "$tmp/lintian.txt" 2>&1 || { cat "$tmp/lintian.txt" >&2; fail "lintian reports errors"; }
# Every remaining warning must be explained in packaging/README.md.
while read -r tag; do
	grep -q -- "\`$tag\`" packaging/README.md || { cat "$tmp/lintian.txt" >&2; fail "lintian warning $tag is not explained in packaging/README.md"; }
done < <(sed -n 's/^W: tlspolicyd: \([a-z0-9-]*\).*/\1/p' "$tmp/lintian.txt" | sort -u)
ok "lintian: no errors, every warning explained ($(grep -c '^W:' "$tmp/lintian.txt" || true) warnings)"

# --- install ----------------------------------------------------------------
(cd "$tmp/dist1" && apt_get install ./"$(basename "$deb1")") > "$tmp/apt-install.log" 2>&1 ||
	{ cat "$tmp/apt-install.log" >&2; fail "apt-get install ./$(basename "$deb1")"; }
ok "apt-get install ./$(basename "$deb1")"

# expect PATH OWNER:GROUP MODE
expect() {
	[ -e "$1" ] || fail "$1 is missing"
	got=$(stat -c '%U:%G %a' "$1")
	[ "$got" = "$2 $3" ] || fail "$1 is $got, want $2 $3"
}
expect /usr/bin/tlspolicyd root:root 755
for u in tlspolicyd.service tlspolicyd-socketmap.socket tlspolicyd-policyd.socket tlspolicyd-http.socket; do
	expect "/lib/systemd/system/$u" root:root 644
done
expect /etc/tlspolicyd root:root 755
expect /etc/tlspolicyd/tlspolicyd.yaml root:root 644
expect /etc/tlspolicyd/table root:root 755
expect /etc/tlspolicyd/table/policy.yaml root:root 644
expect /var/lib/tlspolicyd _tlspolicyd:_tlspolicyd 750
expect /usr/share/man/man8/tlspolicyd.8.gz root:root 644
expect /usr/share/bash-completion/completions/tlspolicyd root:root 644
for f in copyright changelog.gz README.md docs/policy-table.md docs/postfix.md docs/exim.md \
	examples/postfix/main.cf examples/postfix/master.cf examples/postfix/main-inbound.cf \
	examples/exim/README.md examples/git-hooks/pre-commit examples/tlspolicyd.yaml; do
	expect "/usr/share/doc/tlspolicyd/$f" root:root 644
done
ok "files, owners and modes"

conffiles=$(dpkg-query -W -f='${Conffiles}\n' tlspolicyd)
for f in /etc/tlspolicyd/tlspolicyd.yaml /etc/tlspolicyd/table/policy.yaml; do
	grep -q " $f " <<<"$conffiles" || fail "$f is not a conffile: $conffiles"
done
ok "conffiles"

IFS=: read -r _ _ uid gid _ home shell < <(getent passwd _tlspolicyd) || fail "no user _tlspolicyd"
[ "$uid" -lt 1000 ] || fail "_tlspolicyd has uid $uid, want a system uid"
[ "$home" = /var/lib/tlspolicyd ] || fail "_tlspolicyd's home is $home"
[ "$shell" = /usr/sbin/nologin ] || fail "_tlspolicyd's shell is $shell"
[ "$(getent group _tlspolicyd | cut -d: -f3)" = "$gid" ] || fail "_tlspolicyd's group is not _tlspolicyd"
ok "system user _tlspolicyd (uid $uid)"

[ -L /etc/systemd/system/multi-user.target.wants/tlspolicyd.service ] || fail "tlspolicyd.service is not enabled"
for s in socketmap policyd http; do
	[ ! -e "/etc/systemd/system/sockets.target.wants/tlspolicyd-$s.socket" ] || fail "tlspolicyd-$s.socket is enabled, want opt-in"
done
ok "service enabled on install, sockets not"

got=$(tlspolicyd --version)
[ "$got" = "tlspolicyd version $v1" ] || fail "tlspolicyd --version = $got, want the package's $v1"
# (grep -q on a pipe could end the writer with SIGPIPE, failing under pipefail)
man_page=$(zcat /usr/share/man/man8/tlspolicyd.8.gz)
grep -q '^\.TH tlspolicyd 8' <<<"$man_page" || fail "man page is not tlspolicyd(8)"
if MANWIDTH=80 man --warnings -l /usr/share/man/man8/tlspolicyd.8.gz 2>&1 >/dev/null | grep .; then
	fail "man reports problems in the page"
fi
completion=$(tlspolicyd --generate-bash-completion)
grep -qx serve <<<"$completion" || fail "bash completion does not list serve: $completion"
ok "--version, man page, bash completion"

# --- the packaged configuration, unedited -----------------------------------
tlspolicyd check --config /etc/tlspolicyd/tlspolicyd.yaml > "$tmp/check.log" 2>&1 || { cat "$tmp/check.log" >&2; fail "tlspolicyd check --config /etc/tlspolicyd/tlspolicyd.yaml"; }
ok "tlspolicyd check --config /etc/tlspolicyd/tlspolicyd.yaml: $(tail -n1 "$tmp/check.log")"

verify_out=$(systemd-analyze verify /lib/systemd/system/tlspolicyd.service /lib/systemd/system/tlspolicyd-*.socket 2>&1) || { echo "$verify_out" >&2; fail "systemd-analyze verify"; }
if grep -i 'tlspolicyd' <<<"$verify_out"; then fail "systemd-analyze verify complains about the units"; fi
ok "systemd-analyze verify"

# --- the unit's ExecStart, as the unit's user --------------------------------
unit=/lib/systemd/system/tlspolicyd.service
user=$(sed -n 's/^User=//p' "$unit")
[ "$user" = _tlspolicyd ] || fail "the unit runs as '$user', want _tlspolicyd"
read -r -a cmd < <(sed -n 's/^ExecStart=//p' "$unit")
[ "${cmd[0]}" = /usr/bin/tlspolicyd ] || fail "ExecStart runs ${cmd[0]}"
# A table entry added to the installed table (purge must remove it too).
printf 'outbound:\n  bank.example: encrypt\n  .bank.example: verify\n' > /etc/tlspolicyd/table/zz-test.yaml
# Ports from the kernel: the packaged 10041-10043 may be in use by others.
# Nothing may leave this machine: no resolver (a closed loopback port), no
# DANE or MTA-STS lookups for the keys asked below.
(cd / && exec setpriv --reuid="$user" --regid="$user" --init-groups --no-new-privs -- \
	"${cmd[@]}" --socketmap 127.0.0.1:0 --policyd 127.0.0.1:0 --http 127.0.0.1:0 \
	--resolver 127.0.0.1:1 --dane=false --mta-sts=false) > "$tmp/daemon.log" 2>&1 &
daemon_pid=$!
addr() { sed -n "s/.*msg=listening server=$1 addr=\([0-9.:]*\).*/\1/p" "$tmp/daemon.log" | head -n1; }
for _ in $(seq 1 300); do
	[ -n "$(addr http)" ] && break
	kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon exited at start"
	sleep 0.1
done
sm=$(addr socketmap)
http=$(addr http)
[ -n "$sm" ] && [ -n "$http" ] || fail "the daemon did not report its listeners in 30 s"
[ "$(stat -c %U /proc/"$daemon_pid")" = _tlspolicyd ] || fail "the daemon does not run as _tlspolicyd"
ok "ExecStart runs as _tlspolicyd (socketmap $sm, http $http)"

pf="$tmp/postfix"
mkdir -p "$pf"
printf 'compatibility_level = 3.6\nmyhostname = postmap.tlspolicyd-test.invalid\n' > "$pf/main.cf"
touch -d '-5 seconds' "$pf/main.cf" # Postfix waits out a main.cf younger than a second
postmap_q() { # KEY WANT: postmap's answer through the daemon ("" = NOTFOUND, exit 1 without error)
	rc=0
	got=$(postmap -c "$pf" -q "$1" "socketmap:inet:$sm:tls_policy" 2>"$tmp/postmap.err") || rc=$?
	if [ -s "$tmp/postmap.err" ] || [ "$got" != "$2" ] || { [ -n "$2" ] && [ "$rc" -ne 0 ]; }; then
		cat "$tmp/postmap.err" >&2
		fail "postmap -q $1 answered '$got' (exit $rc), want '$2'"
	fi
}
postmap_q bank.example encrypt
postmap_q Sub.Bank.Example verify
postmap_q unlisted.example ""
ok "postmap -q through the daemon: bank.example -> encrypt, Sub.Bank.Example -> verify, unlisted.example -> NOTFOUND"

kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=""
[ "$rc" -eq 0 ] || fail "the daemon exited $rc on SIGTERM"
# What the daemon wrote (its event log at start, its probe cache at exit)
# is the user's. (Other test runs on a shared machine may drop root-owned
# files of their own here: only these two are checked.)
for f in /var/lib/tlspolicyd/events.jsonl /var/lib/tlspolicyd/probes.json; do
	[ -e "$f" ] || fail "the daemon did not write $f"
	[ "$(stat -c %U "$f")" = _tlspolicyd ] || fail "$f is not owned by _tlspolicyd"
done
ok "SIGTERM stops the daemon (exit 0); it wrote events.jsonl and probes.json in /var/lib/tlspolicyd as _tlspolicyd"

# --- upgrade with an edited conffile ------------------------------------------
sed -i 's/^  level: info$/  level: warn  # edited by test-deb.sh/' /etc/tlspolicyd/tlspolicyd.yaml
grep -q 'edited by test-deb.sh' /etc/tlspolicyd/tlspolicyd.yaml || fail "could not edit the conffile"
touch /var/lib/tlspolicyd/kept-by-upgrade
v2="$v1+test2"
VERSION="$v2" DIST="$tmp/dist2" bash packaging/build-deb.sh
deb2=$(ls "$tmp"/dist2/tlspolicyd_*.deb)
(cd "$tmp/dist2" && apt_get install ./"$(basename "$deb2")") > "$tmp/apt-upgrade.log" 2>&1 ||
	{ cat "$tmp/apt-upgrade.log" >&2; fail "upgrade to $v2"; }
[ "$(dpkg-query -W -f='${Version}' tlspolicyd)" = "$v2" ] || fail "the upgrade did not install $v2"
[ "$(tlspolicyd --version)" = "tlspolicyd version $v2" ] || fail "tlspolicyd --version after the upgrade: $(tlspolicyd --version)"
grep -q 'edited by test-deb.sh' /etc/tlspolicyd/tlspolicyd.yaml || fail "the upgrade overwrote the edited /etc/tlspolicyd/tlspolicyd.yaml"
[ -e /etc/tlspolicyd/table/zz-test.yaml ] || fail "the upgrade removed a table file"
[ -e /var/lib/tlspolicyd/kept-by-upgrade ] || fail "the upgrade removed state"
getent passwd _tlspolicyd >/dev/null || fail "the upgrade removed the user"
[ -L /etc/systemd/system/multi-user.target.wants/tlspolicyd.service ] || fail "the upgrade disabled the service"
tlspolicyd check --config /etc/tlspolicyd/tlspolicyd.yaml >/dev/null 2>&1 || fail "check after the upgrade"
ok "upgrade $v1 -> $v2 keeps the edited conffile, the table, the state, the user, the enabled service"

# --- purge ----------------------------------------------------------------------
apt_get purge tlspolicyd > "$tmp/apt-purge.log" 2>&1 || { cat "$tmp/apt-purge.log" >&2; fail "apt-get purge tlspolicyd"; }
if pkg_known; then fail "tlspolicyd is still known to dpkg after purge"; fi
for p in /etc/tlspolicyd /var/lib/tlspolicyd /usr/bin/tlspolicyd /lib/systemd/system/tlspolicyd.service \
	/etc/systemd/system/multi-user.target.wants/tlspolicyd.service /usr/share/doc/tlspolicyd; do
	[ ! -e "$p" ] && [ ! -L "$p" ] || fail "$p is left after purge"
done
if getent passwd _tlspolicyd >/dev/null; then fail "user _tlspolicyd is left after purge"; fi
if getent group _tlspolicyd >/dev/null; then fail "group _tlspolicyd is left after purge"; fi
ok "purge leaves no /etc/tlspolicyd, /var/lib/tlspolicyd, user or group"

echo "test-deb: $checks passed, 0 failed"
