#!/usr/bin/env bash
# build-deb.sh: build dist/tlspolicyd_<version>_<arch>.deb with dpkg-deb from
# the debian/ tree beside this script. Run from anywhere inside a checkout,
# on a machine with the Go toolchain go.mod names and dpkg-deb (any Debian).
#
# Version: $VERSION if set, else the VERSION file at the repository's top,
# else `git describe --tags` of a v<semver> tag, else
# 0.0~git<commit time>.<commit>; the binary's --version prints the same.
# Architecture: GOARCH (default: the Go toolchain's) in Debian's spelling.
# Output directory: $DIST (default dist/).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
cd "$top"

die() { echo "build-deb: $*" >&2; exit 1; }
for tool in go dpkg-deb gzip git; do
	command -v "$tool" >/dev/null || die "$tool not found"
done

commit_time=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$commit_time}"

version="${VERSION:-}"
if [ -z "$version" ] && [ -f VERSION ]; then
	version=$(tr -d ' \n' < VERSION)
fi
if [ -z "$version" ] && tag=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
	# v1.2.0 -> 1.2.0; v1.2.0-3-gabcdef -> 1.2.0+3.gabcdef
	version=$(echo "${tag#v}" | sed -E 's/-([0-9]+)-g([0-9a-f]+)$/+\1.g\2/')
fi
if [ -z "$version" ]; then
	version="0.0~git$(TZ=UTC date -d "@$commit_time" +%Y%m%d%H%M%S).$(git rev-parse --short=12 HEAD)"
fi
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && [ -z "${VERSION:-}" ]; then
	version="$version+dirty"
fi
# A native Debian version: digits first, no hyphen (no Debian revision).
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "version $version is not a Debian native version (want e.g. 1.2.0 or 1.2.0+3.gabc)"

goarch=${GOARCH:-$(go env GOARCH)}
case "$goarch" in
	amd64 | arm64 | riscv64 | s390x) arch=$goarch ;;
	386) arch=i386 ;;
	arm) arch=armhf; export GOARM=${GOARM:-7} ;;
	ppc64le) arch=ppc64el ;;
	*) die "no Debian architecture for GOARCH=$goarch" ;;
esac
maintainer=${MAINTAINER:-"tlspolicyd developers <tlspolicyd@users.noreply.github.com>"}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
umask 022

echo "build-deb: tlspolicyd $version for $arch"
install -d "$root/usr/bin"
# No cgo (no libc dependency), position-independent (ASLR; lintian knows a
# static-pie binary is not a static one by mistake), stripped, reproducible;
# the version is what `tlspolicyd --version` prints.
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath -buildvcs=false -buildmode=pie \
	-ldflags "-s -w -buildid= -X main.version=$version" \
	-o "$root/usr/bin/tlspolicyd" ./cmd/tlspolicyd

# systemd units: the service (enabled on install) and the opt-in sockets.
install -d "$root/lib/systemd/system"
install -m 0644 examples/systemd/tlspolicyd.service examples/systemd/tlspolicyd-*.socket "$root/lib/systemd/system/"

# Configuration (conffiles): works unedited on Debian 12.
install -d "$root/etc/tlspolicyd/table"
install -m 0644 packaging/tlspolicyd.yaml "$root/etc/tlspolicyd/tlspolicyd.yaml"
install -m 0644 packaging/table/policy.yaml "$root/etc/tlspolicyd/table/policy.yaml"

# Man page from the CLI's own help, bash completion through the CLI.
install -d "$root/usr/share/man/man8" "$root/usr/share/bash-completion/completions"
if [ "$goarch" = "$(go env GOHOSTARCH)" ]; then
	"$root/usr/bin/tlspolicyd" man > "$work/tlspolicyd.8"
else
	GOARCH=$(go env GOHOSTARCH) GOARM= go run ./cmd/tlspolicyd man > "$work/tlspolicyd.8"
fi
[ -s "$work/tlspolicyd.8" ] || die "the man page is empty"
gzip -9n < "$work/tlspolicyd.8" > "$root/usr/share/man/man8/tlspolicyd.8.gz"
install -m 0644 packaging/tlspolicyd.bash-completion "$root/usr/share/bash-completion/completions/tlspolicyd"

# Documentation: README, docs/, examples (Postfix, Exim, git hook, systemd).
doc="$root/usr/share/doc/tlspolicyd"
install -d "$doc/docs" "$doc/examples"
install -m 0644 README.md "$doc/README.md"
install -m 0644 docs/*.md "$doc/docs/"
cp -R examples/. "$doc/examples/"
find "$doc" -type d -exec chmod 0755 {} +
find "$doc" -type f -exec chmod 0644 {} +
printf 'tlspolicyd (%s) unstable; urgency=medium\n\n  * Built from git commit %s.\n\n -- %s  %s\n' \
	"$version" "$(git rev-parse HEAD 2>/dev/null || echo unknown)" "$maintainer" \
	"$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")" | gzip -9n > "$doc/changelog.gz"
bash packaging/copyright.sh "$version" > "$doc/copyright"

# Control area.
install -d -m 0755 "$root/DEBIAN"
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
	install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"
done
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
	-e "s|@MAINTAINER@|$maintainer|" packaging/debian/control.in > "$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
	xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

dist=${DIST:-dist}
mkdir -p "$dist"
out="$dist/tlspolicyd_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "build-deb: wrote $out"
