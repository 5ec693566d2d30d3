# Two commands do all set-up on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test test-all bench wheels data clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-installs only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

data: install
	$(PY) -m vrt_spike.data.synthesize --out data/synthetic --if-missing

train: install data
	$(PY) train.py experiment=demo

# Two pytest-xdist workers, one torch thread each (tests/conftest.py): on 2 cores the fast suite takes
# about 2/3 of its serial time. worksteal rather than loadfile: the sweep and memory-plan files would
# otherwise keep one worker busy while the other idles (a module fixture may then be built on both).
test: install
	$(PY) -m pytest -q -n 2 --dist worksteal

test-all: install
	$(PY) -m pytest -q -m ''

# CPU-sized default; on a GPU run e.g. `python -m vrt_spike.bench model=baseline data.crop_size=256 ...`
bench: install
	$(PY) -m vrt_spike.bench model=tiny data.batch_size=1 data.clip_len=3 data.crop_size=64 \
		bench.warmup=1 bench.iters=3

# Wheels that benchmarks/gpu_ladder.sh installs on a bare GPU box (Python 3.12, manylinux x86_64),
# which has torch, lightning, einops, torchmetrics, numpy, PyYAML, ... but not these runtime
# dependencies of the ladder and of the CUDA tests, at the versions installed here. antlr4 4.9.3 is
# published as source only: it is pure Python, so a locally built wheel is the same everywhere.
WHEEL_BINARIES := hydra-core omegaconf bitsandbytes
WHEEL_SOURCES := antlr4-python3-runtime
WHEEL_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
version_of = $$($(PY) -c "import importlib.metadata as m; print(m.version('$(1)'))")

wheels: install
	rm -rf .whl && mkdir -p .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(addprefix --platform ,$(WHEEL_PLATFORMS)) -d .whl \
		$(foreach name,$(WHEEL_BINARIES),$(name)==$(call version_of,$(name)))
	$(PY) -m pip wheel -q --no-deps -w .whl $(foreach name,$(WHEEL_SOURCES),$(name)==$(call version_of,$(name)))
	@ls -1 .whl && du -ch .whl/*.whl | tail -1

clean:
	rm -rf outputs multirun .pytest_cache
