# Entry points: install, demo, test, bench, lint.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch is pinned and installed before the package: an unpinned torch resolves to
# the newest CUDA build (several GB); 2.13.0 is the CPU build these machines carry.
TORCH  := torch==2.13.0

.PHONY: install demo test test-full bench bench-peers bench-layers bench-pruning bench-opencl lint clean

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
# TEST_ARGS goes to pytest, e.g. a tier: TEST_ARGS='-m "not cross and not opencl"'.
TEST_WORKERS ?= auto
TEST_ARGS    ?=
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(TEST_ARGS)

# Every architecture in every variant on every backend (about 25 minutes on 2 cores).
test-full: install
	PATCC_FULL_MATRIX=1 $(PY) -m pytest -q -n $(TEST_WORKERS) $(TEST_ARGS)

# make bench TARGET=x86_64-avx2: patcc's code for that tag, tuned and timed here.
TARGET ?= x86_64
bench: install
	$(PY) benchmarks/run.py --target $(TARGET)

# patcc against every CPU engine a user could pick, each engine in its own process
# (benchmarks/peers.py): onnxruntime in .venv; OpenVINO, MNN and ExecuTorch + XNNPACK
# in .venv-bench; DeepSparse (optional: numpy<2) in .venv-deepsparse. Not part of
# `make test`. Options go through PEERS_ARGS, e.g. PEERS_ARGS="--runs 3 --models resnet18:6x".
BENCH_VENV      := .venv-bench
DEEPSPARSE_VENV := .venv-deepsparse
PEERS_ARGS      ?=

$(BENCH_VENV)/.installed: benchmarks/requirements-peers.txt pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet $(TORCH)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements-peers.txt
	$(BENCH_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

# An install that fails leaves its reason in $(DEEPSPARSE_VENV)/UNAVAILABLE (peers.py
# prints it and skips DeepSparse) and still makes the stamp: no retry on every run.
$(DEEPSPARSE_VENV)/.installed: benchmarks/requirements-deepsparse.txt
	mkdir -p $(DEEPSPARSE_VENV) && rm -f $(DEEPSPARSE_VENV)/UNAVAILABLE
	if ! { test -x $(DEEPSPARSE_VENV)/bin/python || $(PYTHON) -m venv $(DEEPSPARSE_VENV); } \
	     > $(DEEPSPARSE_VENV)/install.log 2>&1 \
	   || ! $(DEEPSPARSE_VENV)/bin/python -m pip install --quiet \
	     -r benchmarks/requirements-deepsparse.txt >> $(DEEPSPARSE_VENV)/install.log 2>&1; then \
	  reason=$$( (grep '^ERROR' $(DEEPSPARSE_VENV)/install.log \
	    || cat $(DEEPSPARSE_VENV)/install.log) | tail -n1 | cut -c1-300); \
	  echo "DeepSparse 1.8.0 did not install ($$reason; see $(DEEPSPARSE_VENV)/install.log)" \
	    | tee $(DEEPSPARSE_VENV)/UNAVAILABLE; \
	fi
	touch $@

bench-peers: install $(BENCH_VENV)/.installed $(DEEPSPARSE_VENV)/.installed
	$(PY) benchmarks/peers.py --target $(TARGET) $(PEERS_ARGS)

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
	rm -rf $(VENV) $(BENCH_VENV) $(DEEPSPARSE_VENV) build *.egg-info .pytest_cache .hypothesis
