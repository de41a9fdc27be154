# The two commands of the README: `make demo` (install + default experiment) and `make test` (what CI runs).
# Every target depends on the install stamp, not on a reinstall: scripts/install.sh runs again only when
# pyproject.toml or the script changed (and skips even then if their hash is unchanged).
SHELL := /bin/bash
ENV := source scripts/env.sh &&
STAMP := .venv/fedrisk-install.stamp
LINT_PATHS := fedrisk tests experiments

.PHONY: install demo test test-all lint

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh

demo: $(STAMP)
	$(ENV) .venv/bin/fedrisk run experiments/configs/vertical_ks_uplift.toml

# CI: lint, then the fast suite (tests marked slow are left to test-all).
test: lint
	$(ENV) .venv/bin/python -m pytest -q -m "not slow"

test-all: lint
	$(ENV) .venv/bin/python -m pytest -q

lint: $(STAMP)
	.venv/bin/ruff check $(LINT_PATHS) && .venv/bin/ruff format --check $(LINT_PATHS)
