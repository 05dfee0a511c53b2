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
