#!/usr/bin/env bash
# Prepare this machine for presence_sdk's demo and tests. Idempotent and quick when
# everything is already there.
#
#   * Debian packages: PostgreSQL 15 server, build tools for pg_cron;
#   * pg_cron >= 1.5 for PostgreSQL 15 (scripts/install-pg-cron.sh);
#   * a legacy pg_cron 1.4.2 tree for the fallback tests (scripts/stage-pg-cron-legacy.sh);
#   * the virtualenv .venv with `pip install -e .[dev]`.
#
# Needs root for apt-get (as on CI); prints what to run otherwise.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

need_pkgs=()
for pkg in postgresql-15 postgresql-client-15 postgresql-server-dev-15 build-essential make; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages: ${need_pkgs[*]} (run: sudo apt-get install -y ${need_pkgs[*]})" >&2
        exit 1
    fi
    echo "setup: installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

bash scripts/install-pg-cron.sh
if [ -f scripts/stage-pg-cron-legacy.sh ]; then
    bash scripts/stage-pg-cron-legacy.sh
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$python" -m venv .venv
fi
stamp=.venv/.presence-sdk-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing presence-sdk[dev] into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi
echo "setup: ready"
