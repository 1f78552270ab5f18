#!/bin/sh
# install-deps.sh: install what the end-to-end tests drive (Postfix 3.7, swaks, redis-server),
# non-interactively and idempotently. Needs root (CI runs it with sudo).
#
# Postfix is preseeded with "No configuration": no /etc/postfix/main.cf is written and no
# system MTA is started; the tests run their own throwaway instances with `postfix -c DIR`.
set -eu

bins="/usr/sbin/postfix /usr/sbin/postmap /usr/sbin/postqueue /usr/sbin/postconf /usr/sbin/postcat /usr/sbin/sendmail /usr/bin/swaks /usr/bin/redis-server"
need=""
for bin in $bins; do
	[ -x "$bin" ] || need=1
done
if [ -z "$need" ]; then
	echo "install-deps: postfix and swaks already installed"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: must run as root" >&2
	exit 1
fi

echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q postfix swaks redis-server

# apt-get can succeed without providing everything (a diverted or removed
# binary): the tests need each of these, so say which is missing and fail.
for bin in $bins; do
	if [ ! -x "$bin" ]; then
		echo "install-deps: $bin missing after apt-get install" >&2
		exit 1
	fi
done
echo "install-deps: postfix and swaks installed"
