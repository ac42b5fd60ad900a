# Quickstart:  make demo   (the whole pipeline on Fashion-MNIST)
#              make test   (the test suite)
# Both create .venv from requirements.txt and install the Debian Fashion-MNIST package if the
# data is missing and apt-get is available (make test also the clip art, for the colour presets).
# Colour:      make demo DATA=clipart   (64x64 clip art: Debian's openclipart-png, --recipe=clipart)
PYTHON ?= python3
VENV ?= .venv
DATA ?= fashion_mnist
ifeq ($(DATA),clipart)
WORKDIR ?= runs/clipart
RECIPE ?= clipart
DATA_TARGET = data-clipart
else ifeq ($(DATA),fashion_mnist)
WORKDIR ?= runs/demo
RECIPE ?= default
DATA_TARGET = data
else
$(error DATA must be fashion_mnist or clipart, got $(DATA))
endif
PRESET ?= fashion_mnist
EXPORT_DIR ?= exports/$(PRESET)
QUANTIZATION ?= float32,float16
FASHION_MNIST_DIR = /usr/share/datasets/fashion-mnist
PY = $(VENV)/bin/python

.PHONY: demo preset-export test test-fast install data data-clipart lint format clean

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	@# The installed commands (vqvae-train, ...: pyproject's [project.scripts]); strict: the scripts'
	@# package-dir mapping (vqvae_tf.scripts.train -> train/) needs the link tree in build/.
	$(PY) -m pip install -q --no-deps -e . --config-settings editable_mode=strict > $(VENV)/editable.log 2>&1 \
	  || { cat $(VENV)/editable.log; exit 1; }
	touch $@

install: $(VENV)/.installed

data:
	@if [ -z "$$VQVAE_DATA_DIR" ] && [ ! -e $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ] && [ ! -e $(FASHION_MNIST_DIR)/train-images-idx3-ubyte ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)..."; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST IDX files not found and apt-get is unavailable: set VQVAE_DATA_DIR (see BUILD.md)." >&2; exit 1; \
	  fi; \
	fi

# Colour images (BENCHMARKS.md section 10): Debian's openclipart-png, 8,121 clip-art PNGs in 22 folders.
CLIPART_DIR = /usr/share/openclipart/png
data-clipart:
	@if [ ! -d $(CLIPART_DIR) ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    echo "Installing clip art (Debian package openclipart-png)..."; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq openclipart-png; \
	  else \
	    echo "$(CLIPART_DIR) not found and apt-get is unavailable: install openclipart-png or use your own images." >&2; exit 1; \
	  fi; \
	fi

demo: install $(DATA_TARGET)
	$(PY) -m train.pipeline --workdir=$(WORKDIR) --recipe=$(RECIPE)

# A pretrained preset as a TF Serving model directory and TFLite files, no training.
preset-export: install $(if $(filter clipart%,$(PRESET)),data-clipart,data)
	$(PY) -m export.export_savedmodel --preset=$(PRESET) --export_dir=$(EXPORT_DIR)
	$(PY) -m export.export_tflite --preset=$(PRESET) --export_dir=$(EXPORT_DIR) --quantization=$(QUANTIZATION)

# Test files run in parallel worker processes (pytest-xdist), one file per worker at a time.
PYTEST_PARALLEL ?= -n auto --maxprocesses=4 --dist loadfile

test: install data
	@if [ -d $(CLIPART_DIR) ] || command -v apt-get >/dev/null 2>&1; then $(MAKE) --no-print-directory data-clipart; \
	else echo "$(CLIPART_DIR) not found and apt-get is unavailable: the clip-art tests will skip."; fi
	$(PY) -m pytest -q $(PYTEST_PARALLEL)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_PARALLEL)

lint: install
	$(PY) -m ruff check vqvae_tf train export tests bench
	$(PY) -m ruff format --check vqvae_tf train export tests bench

format: install
	$(PY) -m ruff format vqvae_tf train export tests bench

clean:
	rm -rf $(VENV) runs exports .pytest_cache
