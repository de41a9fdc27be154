# The two commands of the README: `make demo` (install + default experiment) and `make test` (install + tests).
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: install demo test lint bench

install:
	bash scripts/install.sh

demo: install
	$(ENV) .venv/bin/fedrisk run experiments/configs/vertical_ks_uplift.toml

test: install
	$(ENV) .venv/bin/ruff check fedrisk tests experiments && .venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check fedrisk tests experiments && .venv/bin/ruff format --check fedrisk tests experiments
