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

# Database benchmark: pgbench on one throwaway, durable PostgreSQL (a few minutes).
# Prints the table with targets, writes bench/results/latest.json and regenerates the
# measured parts of docs/performance.md and docs/scaling.md. Then the privacy benchmark
# (bench/bench_privacy.py: the visibility rules' cost, presence_counts at 100k and 1M).
# Smoke run (< 1 minute, docs untouched): make bench BENCH_ARGS=--quick
# Then the event log (bench/bench_events.py): delivery latency, CPU per transition with
# and without the log, steady-beat cost, log size, pruning; writes bench/results/events.json
# and the generated block of docs/events.md.
bench: setup
	$(VENV)/python bench/bench_sql.py --update-docs $(BENCH_ARGS)
	$(VENV)/python bench/bench_events.py --update-docs $(BENCH_ARGS)
	$(VENV)/python bench/bench_privacy.py --update-docs $(BENCH_ARGS)

# The demo: a throwaway PostgreSQL + pg_cron, simulated users, live presence table
# (about half a minute with --fast; run examples/demo.py without it for the shipped
# 45 s / 20 s timings).
demo: setup
	$(VENV)/python examples/demo.py --fast
