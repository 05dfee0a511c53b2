# presence_sdk developer commands. Each target sets the machine up first (idempotent).
#
# PostgreSQL for `make test` and `make demo`: the first of PRESENCE_PG_BINDIR, pg_config
# on PATH, Debian's /usr/lib/postgresql/<major>/bin, PostgreSQL 18 from PyPI (embedded-
# postgres, pg_cron built for it into ~/.cache/presence-sdk). PRESENCE_PG=embedded picks
# the last one; scripts/setup.sh says which one it found.
.PHONY: setup test test-pg-cron-1.4 test-pg18 lint demo bench docs

VENV := .venv/bin
LEGACY_STAGE := scripts/stage-pg-cron-legacy.sh

setup:
	bash scripts/setup.sh

# Runs every test (unit + integration on a real PostgreSQL with pg_cron).
test: setup
	$(VENV)/python -m pytest

# The integration tests once more on Debian's pg_cron 1.4.2 (no interval schedules): a
# private PostgreSQL 15 tree staged beside the system one (needs root and apt-get the
# first time; the system PostgreSQL is not touched).
test-pg-cron-1.4: setup
	bindir=$$(bash $(LEGACY_STAGE)) && \
	export PRESENCE_PG_BINDIR=$$bindir PRESENCE_EXPECT_PG_CRON=1.4-1 && \
	$(VENV)/python -m presence_sdk.testing && \
	$(VENV)/python -m pytest -q -m integration

# The integration tests on PostgreSQL 18 from PyPI with pg_cron 1.6.7 built for it
# (no system PostgreSQL involved; works as any user).
test-pg18: setup
	export PRESENCE_PG=embedded PRESENCE_EXPECT_PG_MAJOR=18 && \
	$(VENV)/python -m presence_sdk.testing && \
	$(VENV)/python -m pytest -q -m integration

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy --strict src
	bash scripts/lint-sql.sh

# Database benchmarks: pgbench on throwaway, durable PostgreSQL clusters (tens of
# minutes in all). bench_sql.py: heartbeat, HOT, sweep/list-online at 100k vs 1M users;
# bench_sessions.py: sessions (per-session vs batch vs 0.1.0, HOT, users writes per beat,
# sweep by live sessions); bench_events.py: event delivery latency, CPU per transition,
# log size, pruning (docs/events.md); bench_privacy.py: the visibility rules' cost,
# presence_counts at 100k and 1M. Each prints its targets, writes bench/results/*.json
# and regenerates the measured parts of the docs.
# Smoke run (docs untouched): make bench BENCH_ARGS=--quick
bench: setup
	$(VENV)/python bench/bench_sql.py --update-docs $(BENCH_ARGS)
	$(VENV)/python bench/bench_sessions.py --update-docs $(BENCH_ARGS)
	$(VENV)/python bench/bench_events.py --update-docs $(BENCH_ARGS)
	$(VENV)/python bench/bench_privacy.py --update-docs $(BENCH_ARGS)

# The demo: a throwaway PostgreSQL + pg_cron, simulated users, live presence table
# (about half a minute with --fast; run examples/demo.py without it for the shipped
# 45 s / 20 s timings).
demo: setup
	$(VENV)/python examples/demo.py --fast
