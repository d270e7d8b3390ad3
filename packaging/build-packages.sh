#!/usr/bin/env bash
# Builds the .deb and the .rpm from nfpm.yaml (called by `make package`).
#
#   packaging/build-packages.sh NFPM OUTDIR
#
# NFPM is the nfpm binary (the Makefile installs a pinned version), OUTDIR
# where the packages go. Run from the top of the work tree.
#
# - The programs are built here for the package: position-independent,
#   stripped, with the Makefile's LDFLAGS (version); pme2go-backupd only
#   once cmd/pme2go-backupd holds Go code. GO names the go command.
# - PKG_VERSION (environment) is the package version; by default it comes
#   from the newest vX.Y.Z tag, or is 0.1.0~git<commit date>.<commit> without
#   one (a version dpkg and rpm both order correctly).
# - Man pages are compressed into bin/pkg/man (gzip -n: reproducible).
# - Entries of nfpm.yaml's contents marked "# optional" are dropped, with a
#   notice, while their source does not exist (the daemon's files until the
#   daemon is built); every other missing source is an error.
set -euo pipefail

nfpm=${1:?usage: build-packages.sh NFPM OUTDIR}
out=${2:?usage: build-packages.sh NFPM OUTDIR}
stage=bin/pkg

if [ -z "${PKG_VERSION:-}" ]; then
	if tag=$(git describe --tags --match 'v[0-9]*' --abbrev=0 2>/dev/null); then
		PKG_VERSION=${tag#v}
		extra=$(git rev-list --count "$tag"..HEAD)
		[ "$extra" -gt 0 ] && PKG_VERSION="$PKG_VERSION+git$extra.$(git rev-parse --short=8 HEAD)"
	else
		PKG_VERSION="0.1.0~git$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S).$(git rev-parse --short=8 HEAD)"
	fi
fi
case "$PKG_VERSION" in
[0-9]*) ;;
*) echo "build-packages: PKG_VERSION=$PKG_VERSION must start with a digit" >&2; exit 2 ;;
esac
export PKG_VERSION

rm -rf "$stage"
rm -f "$out"/pme2go-backup[_-]*.deb "$out"/pme2go-backup-*.rpm
mkdir -p "$stage/man" "$out"

GO=${GO:-go}
build() {
	"$GO" build -trimpath -buildmode=pie -ldflags "${LDFLAGS:-} -s -w" -o "$stage/$1" "./cmd/$1"
}
build pme2go-backup
if compgen -G 'cmd/pme2go-backupd/*.go' >/dev/null; then
	build pme2go-backupd
fi
for page in man/*.[0-9]; do
	gzip -9nc "$page" >"$stage/man/$(basename "$page").gz"
done

# Drop optional entries whose source is missing. An entry starts with "  - ".
awk -v notice=/dev/stderr '
function flush() {
	if (entry != "") {
		if (optional && system("test -e \"" src "\"") != 0)
			printf "build-packages: %s does not exist yet: left out of the package\n", src > notice
		else
			printf "%s", entry
	}
	entry = ""; optional = 0; src = ""
}
/^  - / { flush() }
/^[^ #]/ { flush(); print; next }
{
	if ($0 ~ /^  - / || entry != "") {
		entry = entry $0 "\n"
		if ($0 ~ /src:/) {
			line = $0; sub(/.*src:[ \t]*/, "", line); sub(/[ \t].*/, "", line); src = line
			if ($0 ~ /#[ \t]*optional/) optional = 1
		}
		next
	}
	print
}
END { flush() }
' nfpm.yaml >"$stage/nfpm.yaml"

for fmt in deb rpm; do
	"$nfpm" package --config "$stage/nfpm.yaml" --packager "$fmt" --target "$out/"
done
ls -l "$out"
