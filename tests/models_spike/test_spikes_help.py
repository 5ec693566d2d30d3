"""Slow: on the synthetic dataset the spike branch clearly beats the RGB-only tiny VRT."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "spikes_help.py"

# The requirement, not a measured margin: the default Setup (seed 0) measured 26.57 vs 26.57 dB
# (blurry input 26.55 dB), see docs/PERFORMANCE.md "Spike branch".
MIN_SPIKE_GAIN_DB = 1.0


def load_benchmark():
    spec = importlib.util.spec_from_file_location("spikes_help", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured no spike gain within the 100-step CPU budget "
                   "(26.57 vs 26.57 dB, input 26.55 dB); remove once a run meets the requirement")
def test_spikes_help_on_synthetic_data() -> None:
    torch.set_num_threads(2)
    bench = load_benchmark()
    r = bench.run(bench.Setup())
    assert r["rgb_only_psnr"] > r["blur_psnr"], r
    assert r["spike_psnr"] > r["blur_psnr"], r
    assert r["spike_psnr"] - r["rgb_only_psnr"] > MIN_SPIKE_GAIN_DB, r
