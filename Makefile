# Two commands do all set-up on a fresh machine (see README):
#   make demo   — create/update .venv, run the host on the embedded defaults with a demo
#   make test   — create/update .venv, run the whole test suite
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint serve bench

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
