# Two commands do all set-up on a fresh machine (see README):
#   make demo   — create/update .venv, run the host on the embedded defaults with a demo
#   make test   — create/update .venv, run the whole test suite
# The interpreter for .venv: a CPython 3.12 where there is one (its immortal objects let the
# zygote share its whole heap with every worker: ~3 MB per idle worker instead of ~4.9 MB on 3.11,
# see docs/performance.md), else python3. `make PY=/path/to/python` chooses another.
PY ?= $(shell for p in python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) python3; do \
        $$p -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && { echo $$p; exit; }; done; \
        echo python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint serve bench mutation

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/plugbox demo

test: $(STAMP)
	$(VENV)/bin/ruff check plugbox tests
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/plugbox bench

# Mutation testing (slow; never part of `make test` or CI). One module group at a time:
#   make mutation MUTANTS='plugbox.permissions*'   (default: every configured module)
# Results stay in mutants/ (git-ignored); `.venv/bin/mutmut results` lists the survivors.
MUTANTS ?=
mutation: $(STAMP)
	$(VENV)/bin/mutmut run --max-children 2 $(MUTANTS)
	$(VENV)/bin/mutmut results --all true | sed -E 's/^ *([a-z_.]+)\.x[_ǁ][^:]*: /\1: /' | sort | uniq -c
