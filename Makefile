# Two entry points for a fresh machine:  `make demo`  and  `make test`.
#
# Both create .venv on first use, with $(PY) (Python >= 3.11; `make PY=python3.11` picks another one).
# torch is pinned to $(TORCH_VERSION) and installed first, from PyPI, or from the index TORCH_INDEX names:
# PyPI's Linux wheel bundles CUDA (several GB); TORCH_INDEX=https://download.pytorch.org/whl/cpu takes
# PyTorch's CPU-only wheel (about 190 MB).
#
# `make demo` first runs `data`: nothing to do when Fashion-MNIST is in $(FASHION_MNIST_DIR) (Debian's
# dataset-fashion-mnist package) or when DATA_ROOT=DIR names a folder with its four IDX files (then the
# demo reads DIR); else it installs the package with apt-get (as root, or with `sudo -n` when sudo needs
# no password), or says in one line what to run and exits 2. `make test` never needs the data.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
TORCH_INDEX ?=
DATA_ROOT ?=
# Where Debian's dataset-fashion-mnist puts the files (tests point it at a folder of their own).
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
FASHION_MNIST_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
	t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
NEED_DATA := make demo needs Fashion-MNIST: run `sudo apt-get install dataset-fashion-mnist` or pass DATA_ROOT=DIR

.PHONY: setup data demo test lint bench clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { \
	  echo "setup: $(PY) not found: install Python >= 3.11 and name it, e.g. make PY=python3.11" >&2; exit 2; }
	@ver=$$($(PY) -c 'import sys; print("%d.%d.%d" % sys.version_info[:3]); sys.exit(sys.version_info < (3, 11))') \
	  || { echo "setup: needs Python >= 3.11 but $(PY) is $$ver: name a newer one, e.g. make PY=python3.11" >&2; \
	       exit 2; }
	@$(PY) -c 'import ensurepip' >/dev/null 2>&1 || { \
	  pkg=python3-venv; [ "$(PY)" = python3 ] || pkg=python$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv; \
	  echo "setup: $(PY) cannot create a virtual environment (no ensurepip): run \`sudo apt-get install $$pkg\`, then make again" >&2; \
	  exit 2; }
	@echo "setup: creating $(VENV) with $(PY) $$($(PY) -c 'import platform; print(platform.python_version())')"
	@$(PY) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "setup: \`$(PY) -m venv $(VENV)\` failed (its message is above)" >&2; exit 2; }
	@echo "setup: installing torch $(TORCH_VERSION) first, from $(or $(TORCH_INDEX),PyPI)$(if $(TORCH_INDEX),, \
	(its Linux wheel bundles CUDA; TORCH_INDEX=https://download.pytorch.org/whl/cpu takes the CPU-only one)): \
	a large download, minutes"
	$(BIN)/pip install torch==$(TORCH_VERSION)$(if $(TORCH_INDEX), --index-url $(TORCH_INDEX))
	@echo "setup: installing this project (editable) with numpy, pandas, matplotlib, fvcore, jinja2, tqdm, \
	pillow and the test tools pytest, ruff, scikit-learn"
	$(BIN)/pip install -e '.[dev]'
	@touch $(STAMP)
	@echo "setup: done; \`source $(VENV)/bin/activate\` puts energymodel and incremental on PATH"

setup: $(STAMP)

ifneq ($(strip $(DATA_ROOT)),)
data:
	@:
else
data:
	@missing=; for f in $(FASHION_MNIST_FILES); do [ -f "$(FASHION_MNIST_DIR)/$$f" ] || missing=1; done; \
	[ -n "$$missing" ] || exit 0; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make demo needs Fashion-MNIST and this machine has no apt-get: pass DATA_ROOT=DIR, a folder with its four *-ubyte.gz IDX files" >&2; \
	  exit 2; \
	elif [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then sudo="sudo -n"; \
	else echo '$(NEED_DATA)' >&2; exit 2; fi; \
	echo "data: Fashion-MNIST is not in $(FASHION_MNIST_DIR): installing Debian's dataset-fashion-mnist (30 MB) with $${sudo:+$$sudo }apt-get"; \
	$$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist || { \
	  echo "make demo needs Fashion-MNIST: \`$${sudo:+$$sudo }apt-get install dataset-fashion-mnist\` failed (see above): fix that or pass DATA_ROOT=DIR" >&2; \
	  exit 2; }; \
	for f in $(FASHION_MNIST_FILES); do [ -f "$(FASHION_MNIST_DIR)/$$f" ] || { \
	  echo "make demo needs Fashion-MNIST: dataset-fashion-mnist is installed but $(FASHION_MNIST_DIR)/$$f is missing: pass DATA_ROOT=DIR" >&2; \
	  exit 2; }; done
endif

demo: data $(STAMP)
	$(BIN)/python -m incremental demo --out out/demo$(if $(strip $(DATA_ROOT)), --data-root '$(strip $(DATA_ROOT))')

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf out .pytest_cache
