#!/usr/bin/env bash
# copyright.sh VERSION: print /usr/share/doc/tlspolicyd/copyright. The binary
# is statically linked, so it names every Go module compiled into it, with
# the licence text each module ships, and the Go standard library's.
set -euo pipefail
cd "$(dirname "$0")/.."

cat <<HEAD
tlspolicyd $1

Upstream: https://github.com/tlspolicyd/tlspolicyd
Copyright: the tlspolicyd authors.
License: the tlspolicyd repository does not declare a licence yet; until it
 does, no rights beyond those of the law are granted for tlspolicyd's own
 code. The code below is compiled into /usr/bin/tlspolicyd under its own
 licence.

HEAD

licence() { # the first licence file of a directory
	find "$1" -maxdepth 1 -type f \( -iname 'LICENSE*' -o -iname 'LICENCE*' -o -iname 'COPYING*' \) | sort | head -1
}

goroot=$(go env GOROOT)
echo "Files compiled in: the Go standard library $(go env GOVERSION)"
echo "License:"
sed -e 's/^$/./' -e 's/^/ /' "$(licence "$goroot")"
echo
go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/tlspolicyd |
	sort -u | while read -r path version dir; do
	file=$(licence "$dir")
	[ -n "$file" ] || { echo "copyright.sh: no licence file in $path $version" >&2; exit 1; }
	echo "Files compiled in: Go module $path $version"
	if grep -q 'Apache License' "$file" && grep -q 'Version 2.0, January 2004' "$file"; then
		# Debian ships this text once (lintian: copyright-file-contains-full-apache-2-license).
		echo "License: Apache-2.0"
		echo " The full text is in /usr/share/common-licenses/Apache-2.0."
	else
		echo "License:"
		sed -e 's/^[[:space:]]*$/./' -e 's/^/ /' "$file"
	fi
	echo
done
