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
# The REST tests (tests/rest): socket activation, a client run as another
# user through the socket.
command -v systemd-socket-activate >/dev/null 2>&1 || missing+=(systemd)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v curl >/dev/null 2>&1 || missing+=(curl)

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

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
updated=""
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: missing: ${missing[*]}"
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "install-deps: no apt-get here; install ${missing[*]} with your package manager" >&2
		exit 1
	fi
	$SUDO apt-get update
	updated=1
	$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

# promtool (tests/rest checks /metrics with `promtool check metrics`): taken
# from Debian's prometheus package, unpacked (dpkg -x) into a cache directory
# and never installed, so that no Prometheus server is set up or started.
PROMTOOL_DIR=/var/cache/pme2go-backup-tools/prometheus
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$PROMTOOL_DIR/usr/bin/promtool" ] && command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: unpacking promtool from the prometheus package into $PROMTOOL_DIR"
	tmp="$(mktemp -d)"
	chmod 0755 "$tmp"
	if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
		[ -n "$updated" ] || $SUDO apt-get update
		(cd "$tmp" && apt-get download prometheus)
	fi
	$SUDO mkdir -p "$PROMTOOL_DIR"
	$SUDO dpkg -x "$tmp"/prometheus_*.deb "$PROMTOOL_DIR"
	rm -rf "$tmp"
	"$PROMTOOL_DIR/usr/bin/promtool" --version >/dev/null
fi
