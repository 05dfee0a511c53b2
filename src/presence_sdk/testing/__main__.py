"""``python -m presence_sdk.testing``: say which PostgreSQL the test cluster will run.

Prepares it too: for the embedded PostgreSQL from PyPI this builds pg_cron into the
per-user cache, so a later test session starts at once. Prints one line and exits 0,
or prints one line saying what to install and exits 1 (``--verbose``: every attempt).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from presence_sdk.testing._errors import ClusterError
from presence_sdk.testing._locate import find_bindir, pg_cron_version_of


def main(argv: list[str] | None = None) -> int:
    """Locate (and prepare) the PostgreSQL for tests; print what was found."""
    parser = argparse.ArgumentParser(prog="python -m presence_sdk.testing", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="on failure, list every attempt")
    args = parser.parse_args(argv)
    try:
        bindir = find_bindir(pg_cron=True)
    except ClusterError as exc:
        if args.verbose:
            message = str(exc)
        else:
            first = str(exc).splitlines()[0]
            message = f"{first} (every attempt: python -m presence_sdk.testing --verbose)"
        print(f"presence_sdk.testing: {message}", file=sys.stderr)
        return 1
    version = subprocess.run(
        [str(bindir / "pg_config"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"{version} with pg_cron {pg_cron_version_of(bindir)} in {bindir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
