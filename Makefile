# Two commands do all set-up on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test test-all bench data clean

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

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m ''

# CPU-sized default; on a GPU run e.g. `python -m vrt_spike.bench model=baseline data.crop_size=256 ...`
bench: install
	$(PY) -m vrt_spike.bench model=tiny data.batch_size=1 data.clip_len=3 data.crop_size=64 \
		bench.warmup=1 bench.iters=3 bench.breakdown_steps=1

clean:
	rm -rf outputs multirun .pytest_cache
