#!/bin/sh
# install-exim.sh: make Debian's Exim 4.96 binary available to tests/exim_test.go WITHOUT
# installing the exim4 packages (exim4-daemon-light conflicts with postfix as the system MTA).
#
# The packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
# $EXIM_DIR (default /opt/tlspolicyd-test/exim); the binary the tests run is
# $EXIM_DIR/bin/exim4, a copy without the setuid bit, mode 755, reachable by the exim user
# (Exim re-executes itself after receiving a message and for bounces: a setuid re-exec would
# make the loader ignore LD_PRELOAD, and the exim user must be able to re-execute it). The
# shared libraries it links (libidn12, libgnutls-dane0, …) and
# libnss-wrapper (the tests use it to invent Debian's compiled-in exim user "Debian-exim"
# without touching /etc) are installed with apt-get when missing: they are plain libraries
# that conflict with nothing.
#
# Idempotent: exits at once when the binary is there and runs. Needs root (CI runs it with
# sudo). Nothing is configured and no daemon is started.
set -eu

dir=${EXIM_DIR:-/opt/tlspolicyd-test/exim}
bin="$dir/bin/exim4"
stamp="$dir/.installed"

# version prints "Exim version 4.…" when the binary runs. Debian's build looks up its
# compiled-in user Debian-exim before anything else; when that user does not exist it is
# invented with nss_wrapper, as the tests do.
version() {
	[ -x "$bin" ] || return 1
	if getent passwd Debian-exim >/dev/null 2>&1; then
		"$bin" -bV -C /dev/null 2>&1
		return
	fi
	wrapper=$(ls /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so 2>/dev/null | head -1)
	[ -n "$wrapper" ] || return 1
	nss=$(mktemp -d /tmp/install-exim-nss.XXXXXX)
	nobody=$(getent passwd nobody | cut -d: -f3-4)
	{ cat /etc/passwd; echo "Debian-exim:x:$nobody::/nonexistent:/usr/sbin/nologin"; } >"$nss/passwd"
	{ cat /etc/group; echo "Debian-exim:x:${nobody#*:}:"; } >"$nss/group"
	rc=0
	LD_PRELOAD=$wrapper NSS_WRAPPER_PASSWD=$nss/passwd NSS_WRAPPER_GROUP=$nss/group \
		"$bin" -bV -C /dev/null 2>&1 || rc=$?
	rm -rf "$nss"
	return $rc
}

works() {
	[ -f "$stamp" ] && version | grep -q '^Exim version 4\.'
}

if works; then
	echo "install-exim: $(version | grep "^Exim version" | head -1) already in $dir"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-exim: must run as root" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
tmp=$(mktemp -d /tmp/install-exim.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# apt-get download drops privileges to _apt: let it write the download directory.
chmod 755 "$tmp"
mkdir "$tmp/debs"
if id _apt >/dev/null 2>&1; then chown _apt "$tmp/debs"; fi

download() {
	(cd "$tmp/debs" && apt-get download -q "$@")
}
if ! download exim4-daemon-light exim4-base; then
	apt-get update -q
	download exim4-daemon-light exim4-base
fi

# Shared libraries of the daemon (its Depends line, minus the packages that only make sense
# for an installed MTA), plus nss_wrapper for the tests.
deps=$(dpkg-deb -f "$tmp"/debs/exim4-daemon-light_*.deb Depends |
	tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' |
	grep -v -e '^exim4' -e '^debconf' -e '^$')
missing=""
for p in $deps libnss-wrapper; do
	if ! dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done
if [ -n "$missing" ]; then
	echo "install-exim: apt-get install$missing"
	# shellcheck disable=SC2086 # word splitting wanted
	apt-get install -y -q --no-install-recommends $missing || {
		apt-get update -q
		apt-get install -y -q --no-install-recommends $missing
	}
fi

rm -rf "$dir.new"
mkdir -p "$dir.new/root" "$dir.new/bin"
for deb in "$tmp"/debs/*.deb; do
	dpkg-deb -x "$deb" "$dir.new/root"
done
cp "$dir.new/root/usr/sbin/exim4" "$dir.new/bin/exim4"
chmod 755 "$dir.new/bin/exim4"
(cd "$tmp/debs" && ls *.deb) >"$dir.new/.installed"
chmod -R go+rX "$dir.new"
chmod 755 "$dir.new"

rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
chmod 755 "$(dirname "$dir")"
mv "$dir.new" "$dir"

if ! works; then
	echo "install-exim: $bin does not run:" >&2
	ldd "$bin" | grep 'not found' >&2 || version >&2 || true
	exit 1
fi
echo "install-exim: $(version | grep "^Exim version" | head -1) installed in $dir"
