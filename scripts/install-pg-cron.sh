#!/usr/bin/env bash
# Install pg_cron for the PostgreSQL 15 server used by the tests and the demo.
#
# Supabase runs pg_cron 1.6.x (interval schedules such as '20 seconds'); Debian
# bookworm only packages 1.4.2. When the vendored 1.6.7 source is present beside the
# repository (../shared/vendor), build and install it; otherwise fall back to Debian's
# package. Never install both: `make install` and the .deb own the same files.
#
# Idempotent: does nothing when the wanted version is already installed.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vendor_dir=${PRESENCE_VENDOR_DIR:-$repo_root/../shared/vendor}
tarball=$vendor_dir/pg_cron-1.6.7.tar.gz
sha256=6684ba135a8de3663af5eddbae354a080b37d2f28f2c1801eeab3bbbb4c39f6a

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

if [ -f "$tarball" ]; then
    if [ "$(installed_version)" = "1.6" ] && [ -f "$("$PG_CONFIG" --pkglibdir)/pg_cron.so" ]; then
        echo "pg_cron 1.6 already installed"
        exit 0
    fi
    echo "$sha256  $tarball" | sha256sum --check --quiet
    if dpkg -s postgresql-15-cron >/dev/null 2>&1; then
        echo "removing Debian's postgresql-15-cron (it would shadow the 1.6.7 build)"
        DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq postgresql-15-cron >/dev/null
    fi
    apt_install postgresql-server-dev-15 build-essential
    build_dir=$(mktemp -d)
    trap 'rm -rf "$build_dir"' EXIT
    tar -xzf "$tarball" -C "$build_dir"
    src=$(find "$build_dir" -maxdepth 1 -mindepth 1 -type d | head -n 1)
    make -s -C "$src" PG_CONFIG="$PG_CONFIG" -j"$(nproc)" >/dev/null
    make -s -C "$src" PG_CONFIG="$PG_CONFIG" install >/dev/null
    echo "pg_cron built from $tarball and installed: $(installed_version)"
else
    if [ -n "$(installed_version)" ]; then
        echo "pg_cron $(installed_version) already installed"
        exit 0
    fi
    apt_install postgresql-15-cron
    echo "pg_cron installed from Debian: $(installed_version)"
fi
