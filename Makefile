# Two entry points: `make demo` and `make test`. Each sets up everything it
# needs on a fresh machine (virtual environment from the lock file, the
# compiled op) and reuses what is already there on a second run.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps

# The CUDA kernels are compiled whenever a CUDA toolkit is found, GPU or not.
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(realpath $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc))))
FORCE_CUDA ?= $(if $(CUDA_HOME),1,0)
TORCH_CUDA_ARCH_LIST ?= 7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX
MAX_JOBS ?= 2

.PHONY: setup demo test test-fast bench bench-quality bench-classsr lock clean

setup: $(STAMPS)/ext

$(STAMPS)/venv: requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --no-deps -r requirements/lock.txt
	mkdir -p $(STAMPS) && touch $@

$(STAMPS)/ext: $(STAMPS)/venv setup.py $(shell find csrc -type f)
	CUDA_HOME="$(CUDA_HOME)" FORCE_CUDA=$(FORCE_CUDA) \
	TORCH_CUDA_ARCH_LIST="$(TORCH_CUDA_ARCH_LIST)" MAX_JOBS=$(MAX_JOBS) \
	$(VENV)/bin/pip install --no-build-isolation --no-deps -e .
	touch $@

demo: setup
	$(PY) tools/demo.py

# Two pytest-xdist workers, each test file on one (its module fixtures are
# built once); tests/conftest.py splits the cores between them.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile

test: setup
	$(PYTEST) --durations=10

# The edit-test loop: everything but the end-to-end runs (marked slow).
test-fast: setup
	$(PYTEST) -m "not slow"

bench: setup
	$(PY) benchmarks/bench_shift.py --overwrite
	$(PY) benchmarks/bench_models.py --overwrite

# Quality on real photos, EDSR x2, 3 seeds (about an hour on 2 cores).
bench-quality: setup
	$(PY) benchmarks/bench_quality.py --models edsr --scales 2 --seeds 0 1 2 \
		--tag edsr_x2 --overwrite

# ClassSR-CARN-M x4 and its ghost variant on large photos, every stage
# through the shipped configs and tools/train.py (about 25 minutes on 2
# cores; the stages' checkpoints stay in work_dirs/bench_classsr).
bench-classsr: setup
	$(PY) benchmarks/bench_classsr.py --overwrite

# Re-resolve the lock from requirements/top.txt (needs the package index).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install -r requirements/top.txt
	.lockenv/bin/pip install --no-deps -r requirements/no-deps.txt
	.lockenv/bin/pip uninstall -y opencv-python
	.lockenv/bin/pip freeze --all | grep -v '^ghostsr' > requirements/lock.txt
	rm -rf .lockenv

clean:
	rm -rf $(STAMPS) build ghostsr_mm/*.so *.egg-info
