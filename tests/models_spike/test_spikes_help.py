"""Slow: on the synthetic dataset the spike branch clearly beats the RGB-only tiny VRT.

Runs ``benchmarks/spikes_help.py`` at its default setup (600 steps of the tiny preset per variant,
both variants at once in two worker processes) for seeds 0, 1, 2: about 10 minutes on 2 cores.
Several seeds because within 600 steps the spike branch takes off at a seed-dependent step that
rounding alone moves: seed 0's gain was +0.00, +0.97, +0.79 and -0.01 dB on builds that differ by
1e-7-level numerics (and +0.08 dB at 900 steps on the last). A seed before its take-off is level
with RGB-only, never clearly worse, so the test asserts a mean gain, a majority of seeds with a
clear gain, and no seed clearly below RGB-only.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "spikes_help.py"

# Measured at the default setup (docs/PERFORMANCE.md, "Spike branch"), seeds 0 / 1 / 2: spike gain
# -0.01 / +0.83 / +0.45 dB (mean +0.42) over the RGB-only model, which itself gains +0.07 dB over
# the input; on the build before: +0.79 / +0.35 / +0.28 (mean +0.47).
MIN_MEAN_SPIKE_GAIN_DB = 0.3
CLEAR_GAIN_DB = 0.3  # at least two of the three seeds
MAX_SPIKE_LOSS_DB = 0.05  # no seed's spike model below its RGB-only model by more than this
SEEDS = (0, 1, 2)


def load_benchmark():
    spec = importlib.util.spec_from_file_location("spikes_help", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_spikes_help_on_synthetic_data() -> None:
    bench = load_benchmark()
    r = bench.run_seeds(bench.Setup(), SEEDS)
    bench._print_seeds(r, bench.Setup())  # the table docs/PERFORMANCE.md quotes (pytest -s shows it)
    assert sorted(r["per_seed"]) == list(SEEDS), r
    gains = {}
    for seed, s in r["per_seed"].items():
        assert s["rgb_only_psnr"] > s["blur_psnr"], (seed, s)
        gains[seed] = s["spike_psnr"] - s["rgb_only_psnr"]
        assert gains[seed] > -MAX_SPIKE_LOSS_DB, (seed, s)
    assert sum(g > CLEAR_GAIN_DB for g in gains.values()) >= 2, gains
    assert r["mean_gain_db"] > MIN_MEAN_SPIKE_GAIN_DB, r


def test_run_seeds_compares_per_seed_on_one_dataset() -> None:
    """The multi-seed plumbing, in seconds: one step per variant on a 1-clip dataset. After one
    step both variants are still the same function (the zero-initialised fusion and ``conv_last``
    let only ``conv_last`` learn in step 1), so each seed's gain is exactly 0; seeds differ."""
    bench = load_benchmark()
    synth = bench.SynthConfig(seed=0, train_clips=1, test_clips=1, frames=2, height=48, width=48)
    r = bench.run_seeds(bench.Setup(steps=1, synth=synth), (0, 1))
    runs = r["per_seed"]
    assert sorted(runs) == [0, 1]
    assert runs[0]["blur_psnr"] == runs[1]["blur_psnr"]  # one dataset for every seed
    assert runs[0]["rgb_only_psnr"] != runs[1]["rgb_only_psnr"]  # the seed sets init and batches
    for s in runs.values():
        assert s["spike_psnr"] == s["rgb_only_psnr"]
    assert r["mean_gain_db"] == 0.0
