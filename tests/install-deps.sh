#!/usr/bin/env bash
# Installs what the tests and the demo need when it is missing: the PostgreSQL
# server and client, xz and zstd, systemd-analyze, lintian, rpm, mandoc,
# debootstrap and systemd-nspawn. Uses apt-get on Debian/Ubuntu; elsewhere it
# only reports what is missing.
set -euo pipefail

missing=()
have_server() {
	command -v initdb >/dev/null 2>&1 && return 0
	compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
	[ -n "$(command -v pg_config 2>/dev/null)" ] && [ -x "$(pg_config --bindir)/initdb" ]
}
have_server || missing+=(postgresql)
command -v pg_dump >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_dump" >/dev/null || missing+=(postgresql-client)
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v tar >/dev/null 2>&1 || missing+=(tar)
# Encrypted archives opened by hand (tests/crypt).
command -v age >/dev/null 2>&1 || missing+=(age)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
# Unit checks (tests/units): systemd-analyze.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# Package checks (tests/packages), man pages (tests/manpages), the booted
# system test (tests/system, make system-test).
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
command -v rpm >/dev/null 2>&1 || missing+=(rpm)
command -v mandoc >/dev/null 2>&1 || missing+=(mandoc)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)

# The S3-compatible server of the off-site tests (tests/s3harness): Versity
# S3 Gateway, built with the Go toolchain into bin/tools like nfpm.
VERSITYGW_VERSION=v1.8.0
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
versitygw="$repo_root/bin/tools/versitygw-$VERSITYGW_VERSION"
if [ ! -x "$versitygw" ] && command -v "${GO:-go}" >/dev/null 2>&1; then
	echo "install-deps: building versitygw $VERSITYGW_VERSION into bin/tools"
	mkdir -p "$repo_root/bin/tools"
	tmpbin="$(mktemp -d)"
	if GOBIN="$tmpbin" "${GO:-go}" install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"; then
		mv "$tmpbin/versitygw" "$versitygw"
	else
		echo "install-deps: versitygw could not be built; the off-site tests will skip" >&2
	fi
	rm -rf "$tmpbin"
fi

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "install-deps: missing: ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: no apt-get here; install ${missing[*]} with your package manager" >&2
	exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
