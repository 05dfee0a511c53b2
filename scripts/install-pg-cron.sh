#!/usr/bin/env bash
# Install pg_cron for Debian's PostgreSQL 15 (the server the tests and the demo use
# when it is there). Needs root; scripts/setup.sh calls it only as root on Debian.
#
#   PRESENCE_PG_CRON=source (default): build pg_cron 1.6.7 from the source this
#       repository carries (third_party/, sha256 pinned in third_party/SHA256SUMS).
#       Interval schedules ('20 seconds') as on Supabase, which runs 1.6.x.
#   PRESENCE_PG_CRON=debian: Debian's package postgresql-15-cron instead (1.4.2 on
#       bookworm: no interval schedules, the sweep then runs every minute).
#
# Never both: `make install` and the .deb own the same files (a later upgrade of the
# package would silently put its library back beside the other version's SQL).
# Idempotent: does nothing when the wanted build is already installed. On failure it
# prints one line naming the file and the reason; the build and `make install` run
# in a temporary staging directory, so nothing is copied into place unless both
# succeeded.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
third_party=${PRESENCE_THIRD_PARTY_DIR:-$repo_root/third_party}
name=pg_cron-1.6.7.tar.gz
tarball=$third_party/$name
choice=${PRESENCE_PG_CRON:-source}

fail() {
    echo "install-pg-cron: $*" >&2
    exit 1
}

apt_install() {
    if [ -z "${_apt_updated:-}" ]; then
        apt-get update -qq
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

installed_version() {
    local control
    control=$("$PG_CONFIG" --sharedir)/extension/pg_cron.control
    [ -f "$control" ] || return 0
    sed -n "s/^default_version = '\(.*\)'/\1/p" "$control"
}

verify_tarball() {
    [ -f "$tarball" ] || fail "$tarball: missing (the repository carries it in third_party/)"
    local pinned got
    pinned=$(awk -v n="$name" '$2 == n { print $1 }' "$third_party/SHA256SUMS" 2>/dev/null || true)
    [ -n "$pinned" ] || fail "$third_party/SHA256SUMS: no pinned sha256 for $name"
    got=$(sha256sum "$tarball" | cut -d' ' -f1)
    [ "$got" = "$pinned" ] || fail "$tarball: sha256 mismatch (got $got, pinned $pinned)"
}

case $choice in
    source | debian) ;;
    *) fail "PRESENCE_PG_CRON=$choice: expected 'source' (default) or 'debian'" ;;
esac

if [ "$choice" = debian ]; then
    if dpkg -s postgresql-15-cron >/dev/null 2>&1; then
        echo "pg_cron $(installed_version) already installed from Debian"
        exit 0
    fi
    apt_install postgresql-15-cron || fail "apt-get install postgresql-15-cron failed"
    echo "pg_cron installed from Debian: $(installed_version)"
    exit 0
fi

# The checksum first, every time: a tampered or truncated tarball is reported even
# when an earlier build is installed.
verify_tarball
if [ "$(installed_version)" = "1.6" ] && [ -f "$("$PG_CONFIG" --pkglibdir)/pg_cron.so" ] \
    && ! dpkg -s postgresql-15-cron >/dev/null 2>&1; then
    echo "pg_cron 1.6 already installed (built from $name)"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || fail "building into $("$PG_CONFIG" --pkglibdir) needs root"
apt_install postgresql-server-dev-15 build-essential \
    || fail "apt-get install postgresql-server-dev-15 build-essential failed"

build_dir=$(mktemp -d)
trap 'rm -rf "$build_dir"' EXIT
log=$(mktemp "${TMPDIR:-/tmp}/presence-pg_cron-build.XXXXXX.log")
tar -xzf "$tarball" -C "$build_dir" 2>>"$log" || fail "$tarball: cannot unpack (log: $log)"
src=$(find "$build_dir" -maxdepth 1 -mindepth 1 -type d | head -n 1)
stage=$build_dir/stage
if ! make -C "$src" PG_CONFIG="$PG_CONFIG" -j"$(nproc)" >>"$log" 2>&1; then
    fail "$tarball: build failed: $(grep -m1 -i 'error' "$log" || echo 'see the log') (log: $log)"
fi
if ! make -C "$src" PG_CONFIG="$PG_CONFIG" DESTDIR="$stage" install >>"$log" 2>&1; then
    fail "$tarball: make install failed: $(grep -m1 -i 'error' "$log" || echo 'see the log') (log: $log)"
fi
[ -f "$stage$("$PG_CONFIG" --pkglibdir)/pg_cron.so" ] \
    || fail "$tarball: the build installed no pg_cron.so (log: $log)"

if dpkg -s postgresql-15-cron >/dev/null 2>&1; then
    echo "removing Debian's postgresql-15-cron (it would shadow the 1.6.7 build)"
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq postgresql-15-cron >/dev/null
fi
# Copy file by file (never `cp -a stage/. /`, which would also reset the modes of
# existing system directories).
(cd "$stage" && find . -type f -print0) | while IFS= read -r -d '' file; do
    target=/${file#./}
    mkdir -p "$(dirname "$target")"
    cp --preserve=mode "$stage/${file#./}" "$target.presence-new"
    mv -f "$target.presence-new" "$target"
done
rm -f "$log"
echo "pg_cron built from $tarball and installed: $(installed_version)"
