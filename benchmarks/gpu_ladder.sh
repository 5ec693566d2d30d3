#!/usr/bin/env bash
# The one-shot GPU run on a bare GPU box that has torch (and lightning, einops, torchmetrics, ...)
# but not the rest of the project's runtime dependencies: installs the carried wheels (`make wheels`
# here puts them in .whl/), puts the repository itself on PYTHONPATH (no pip install of the
# project), runs `python3 -m vrt_spike.bench.gpu_ladder` (each rung a `python3 -m vrt_spike.bench` run),
# then the CUDA tests. Everything it reports goes to $OUT (default: benchmarks/): gpu_ladder.{csv,jsonl,md},
# gpu_ladder_optimizers.csv, gpu_ladder.log, gpu_ladder_runs.tar.gz (per-rung logs, run dirs and timing
# tables), pytest_cuda.log.
#
#   bash benchmarks/gpu_ladder.sh
# Environment: LADDER_BUDGET_S (seconds for the ladder, default 450: with the tests it fits a
# 10-minute command), LADDER_ARGS (more gpu_ladder options, e.g. --skip-compile), PYTEST_TIMEOUT_S
# (default 100), LADDER_SITE (default /tmp/site).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/benchmarks}
mkdir -p "$OUT"
site=${LADDER_SITE:-/tmp/site}

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:$PYTHONPATH" PYTHONUNBUFFERED=1 WANDB_MODE=offline
python3 - <<'EOF' || exit 1
import importlib.util, sys
missing = [m for m in ("torch", "lightning", "hydra", "omegaconf", "bitsandbytes", "einops", "torchmetrics", "rich")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_ladder.sh: missing Python modules {missing}: run `make wheels` where pip works and carry .whl/")
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")
EOF

work=$(mktemp -d /tmp/gpu_ladder.XXXXXX)
python3 -m vrt_spike.bench.gpu_ladder ${LADDER_ARGS:-} --budget "${LADDER_BUDGET_S:-450}" --out "$OUT/gpu_ladder.csv" --work-dir "$work" \
  2>&1 | tee "$OUT/gpu_ladder.log"
ladder_rc=${PIPESTATUS[0]}
tar -czf "$OUT/gpu_ladder_runs.tar.gz" -C "$work" --exclude=inductor_cache . || true

# Only the files that hold CUDA tests: collecting the others would import what this box lacks (e.g. PyAV).
mapfile -t cuda_tests < <(grep -rl --include='test_*.py' 'mark.cuda' tests | sort)
timeout "${PYTEST_TIMEOUT_S:-100}" python3 -m pytest -q -m cuda -p no:cacheprovider "${cuda_tests[@]}" \
  2>&1 | tee "$OUT/pytest_cuda.log"
pytest_rc=${PIPESTATUS[0]}

echo "gpu_ladder.sh: ladder exit $ladder_rc, pytest -m cuda exit $pytest_rc; outputs in $OUT"
exit $(( ladder_rc != 0 ? ladder_rc : pytest_rc ))
