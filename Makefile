# Entry points: install, demo, test, bench, lint.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch is pinned and installed before the package: an unpinned torch resolves to
# the newest CUDA build (several GB); 2.13.0 is the CPU build these machines carry.
TORCH  := torch==2.13.0

.PHONY: install demo test test-full bench bench-layers bench-pruning bench-opencl lint clean

# The stamp makes a second `make install` a no-op unless pyproject.toml changed.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[torch,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m patcc.demo

# One pytest worker per core (pytest-xdist); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= auto
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# Every architecture in every variant on every backend (about 25 minutes on 2 cores).
test-full: install
	PATCC_FULL_MATRIX=1 $(PY) -m pytest -q -n $(TEST_WORKERS)

# make bench TARGET=x86_64-avx2: patcc's code for that tag, tuned and timed here.
TARGET ?= x86_64
bench: install
	$(PY) benchmarks/run.py --target $(TARGET)

# The layers dense-prediction networks add (up-sampling + Concat, bilinear Resize,
# ConvTranspose dense and pruned), single layers against onnxruntime.
bench-layers: install
	$(PY) benchmarks/layers.py
	$(PY) benchmarks/conv_transpose.py

bench-pruning: install
	$(PY) benchmarks/pruning.py

bench-opencl: install
	$(PY) benchmarks/opencl.py

lint: install
	$(VENV)/bin/ruff check patcc tests benchmarks
	$(VENV)/bin/mypy patcc

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
