#!/usr/bin/env bash
# Lint the shipped SQL with squawk (PyPI squawk-cli; settings in .squawk.toml).
#
# Usage: scripts/lint-sql.sh [FILE...]
#   Without arguments: supabase/schema.sql, supabase/migrations/*.sql and
#   supabase/rollbacks/*.sql. Exits non-zero on any finding (squawk's exit status) or
#   when squawk is missing.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

squawk_bin=${SQUAWK:-}
if [ -z "$squawk_bin" ]; then
    if [ -x "$repo_root/.venv/bin/squawk" ]; then
        squawk_bin=$repo_root/.venv/bin/squawk
    elif command -v squawk >/dev/null 2>&1; then
        squawk_bin=$(command -v squawk)
    else
        echo "squawk not found: pip install squawk-cli (it is in the dev extra)" >&2
        exit 2
    fi
fi

if [ "$#" -gt 0 ]; then
    files=("$@")
else
    shopt -s nullglob
    files=(supabase/schema.sql supabase/migrations/*.sql supabase/rollbacks/*.sql)
    shopt -u nullglob
fi

"$squawk_bin" --version
exec "$squawk_bin" --config "$repo_root/.squawk.toml" "${files[@]}"
