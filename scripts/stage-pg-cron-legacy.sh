#!/usr/bin/env bash
# Stage a private, relocated PostgreSQL 15 tree that uses Debian bookworm's pg_cron
# 1.4.2, so the integration tests can run once more on it and prove the migration's
# fallback branch for old pg_cron (no interval schedules: '* * * * *' + NOTICE) on the
# real extension: `make test-pg-cron-1.4` (CI runs it) sets PRESENCE_PG_BINDIR to the
# bindir this script prints.
#
# The system PostgreSQL 15 keeps pg_cron 1.6.7 (scripts/install-pg-cron.sh); the
# 1.4.2 package is NOT installed: `apt-get download` fetches the .deb and
# `dpkg-deb -x` unpacks it into a private directory. PostgreSQL finds its sharedir and
# pkglibdir relative to the real location of its binary, so a copy laid out as
#   <root>/usr/lib/postgresql/15/{bin,lib}  +  <root>/usr/share/postgresql/15
# with the 1.4.2 pg_cron files in place of the 1.6 ones runs independently of the
# system tree (PostgresCluster(bindir=<root>/usr/lib/postgresql/15/bin)).
#
# Usage: scripts/stage-pg-cron-legacy.sh [ROOT]
#   ROOT defaults to $PRESENCE_PG_CRON_LEGACY_ROOT or /var/cache/presence-sdk/pg-cron-legacy.
# Prints the staged bindir on its last line. Idempotent: a complete tree is reused.
# Needs root (apt-get) the first time and network access to Debian's archive.
set -euo pipefail

PG_MAJOR=15
PKG=postgresql-${PG_MAJOR}-cron
root=${1:-${PRESENCE_PG_CRON_LEGACY_ROOT:-/var/cache/presence-sdk/pg-cron-legacy}}
sys_bindir=/usr/lib/postgresql/$PG_MAJOR/bin
sys_libdir=/usr/lib/postgresql/$PG_MAJOR/lib
sys_sharedir=/usr/share/postgresql/$PG_MAJOR
bindir=$root/usr/lib/postgresql/$PG_MAJOR/bin
libdir=$root/usr/lib/postgresql/$PG_MAJOR/lib
sharedir=$root/usr/share/postgresql/$PG_MAJOR
stamp=$root/.staged

staged_version() {
    sed -n "s/^default_version = '\(.*\)'/\1/p" "$sharedir/extension/pg_cron.control" 2>/dev/null
}

if [ ! -x "$sys_bindir/postgres" ]; then
    echo "PostgreSQL $PG_MAJOR server is not installed ($sys_bindir/postgres missing)" >&2
    exit 1
fi

# The stamp records the system server it was copied from: a minor upgrade of
# postgresql-15 re-stages the tree.
want_stamp=$("$sys_bindir/postgres" --version 2>/dev/null || true)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && [ -x "$bindir/postgres" ] \
    && [ -f "$libdir/pg_cron.so" ] \
    && [ "$("$bindir/pg_config" --sharedir 2>/dev/null)" = "$sharedir" ]; then
    echo "legacy pg_cron $(staged_version) already staged in $root" >&2
    echo "$bindir"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work" "$root.tmp"' EXIT
chmod 755 "$work"
# apt downloads as the _apt user when it can write the target directory.
if id _apt >/dev/null 2>&1; then
    chown _apt "$work"
fi

# Fetch the .deb without installing it (installing would overwrite the 1.6.7 build).
# Without package lists (fresh machine), update them once and retry.
if ! (cd "$work" && apt-get download -qq "$PKG" >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$work" && apt-get download -qq "$PKG")
fi
deb=$(find "$work" -maxdepth 1 -name "${PKG}_*.deb" | head -n 1)
if [ -z "$deb" ]; then
    echo "could not download $PKG" >&2
    exit 1
fi
dpkg-deb -x "$deb" "$work/pkg"

# Build the tree beside its final place, then swap it in (a half-staged tree is never
# mistaken for a complete one).
rm -rf "$root.tmp"
mkdir -p "$root.tmp/usr/lib/postgresql/$PG_MAJOR" "$root.tmp/usr/share/postgresql"
cp -a "$sys_bindir" "$root.tmp/usr/lib/postgresql/$PG_MAJOR/bin"
cp -a "$sys_libdir" "$root.tmp/usr/lib/postgresql/$PG_MAJOR/lib"
cp -a "$sys_sharedir" "$root.tmp/usr/share/postgresql/$PG_MAJOR"
rm -rf "$root.tmp/usr/lib/postgresql/$PG_MAJOR/lib/bitcode/pg_cron" \
    "$root.tmp/usr/lib/postgresql/$PG_MAJOR/lib/bitcode/pg_cron.index.bc"
rm -f "$root.tmp/usr/lib/postgresql/$PG_MAJOR/lib/pg_cron.so" \
    "$root.tmp/usr/share/postgresql/$PG_MAJOR/extension/"pg_cron*
cp -a "$work/pkg/usr/lib/postgresql/$PG_MAJOR/lib/." "$root.tmp/usr/lib/postgresql/$PG_MAJOR/lib/"
cp -a "$work/pkg/usr/share/postgresql/$PG_MAJOR/extension/." \
    "$root.tmp/usr/share/postgresql/$PG_MAJOR/extension/"
cp -a "$deb" "$root.tmp/"

rm -rf "$root"
mkdir -p "$(dirname "$root")"
mv "$root.tmp" "$root"
# The server runs as the postgres OS user: it must be able to read the whole tree.
chmod -R a+rX "$root"
d=$root
while [ "$d" != / ]; do
    chmod a+x "$d" 2>/dev/null || true
    d=$(dirname "$d")
done

got=$("$bindir/pg_config" --sharedir)
if [ "$got" != "$sharedir" ]; then
    echo "relocation failed: $bindir/pg_config --sharedir says $got, expected $sharedir" >&2
    exit 1
fi
echo "$want_stamp" >"$stamp"
echo "legacy pg_cron $(staged_version) ($(basename "$deb")) staged in $root" >&2
echo "$bindir"
