# presence_sdk developer commands. Each target sets the machine up first (idempotent).
.PHONY: setup test lint demo bench docs

VENV := .venv/bin

setup:
	bash scripts/setup.sh

# Runs every test (unit + integration on a real PostgreSQL 15 with pg_cron).
test: setup
	$(VENV)/python -m pytest

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy --strict src
	bash scripts/lint-sql.sh

# Database benchmarks: pgbench on throwaway, durable PostgreSQL 15 clusters (about ten
# minutes). bench_sql.py: heartbeat, HOT, sweep/list-online at 100k vs 1M users;
# bench_sessions.py: sessions (per-session vs batch vs 0.1.0, HOT, users writes per
# beat, sweep by live sessions). Each prints its targets, writes bench/results/*.json
# and regenerates the measured parts of docs/performance.md (and docs/scaling.md).
# Smoke run (a few minutes, docs untouched): make bench BENCH_ARGS=--quick
bench: setup
	$(VENV)/python bench/bench_sql.py --update-docs $(BENCH_ARGS)
	$(VENV)/python bench/bench_sessions.py --update-docs $(BENCH_ARGS)

# The demo: embedded PostgreSQL 15 + pg_cron, simulated users, live presence table
# (about half a minute with --fast; run examples/demo.py without it for the shipped
# 45 s / 20 s timings).
demo: setup
	$(VENV)/python examples/demo.py --fast
