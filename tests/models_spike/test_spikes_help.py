"""Slow: on the embedded synthetic data VRT+Spike beats the spike floor and its RGB-only twin.

Runs ``benchmarks/spikes_help.py`` at its default setup (1200 steps of the tiny preset per
variant, both variants at once in two worker processes) for seeds 0, 1, 2, scored on the whole
test split at full frames: about 35 minutes on 2 cores. The targets (issue #16) hold per seed.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "spikes_help.py"
SEEDS = (0, 1, 2)


def load_benchmark():
    spec = importlib.util.spec_from_file_location("spikes_help", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_vrt_spike_beats_the_floor_and_rgb_only_on_every_seed() -> None:
    bench = load_benchmark()
    r = bench.run_seeds(bench.Setup(), SEEDS)
    bench.print_seeds(r, bench.Setup())  # the table docs/PERFORMANCE.md quotes (pytest -s shows it)
    assert sorted(r["per_seed"]) == list(SEEDS), r
    for seed, s in r["per_seed"].items():
        assert s["spike_psnr"] >= s["floor_psnr"] + bench.FLOOR_MARGIN_DB, (seed, s)
        assert s["spike_psnr"] >= s["rgb_only_psnr"] + bench.RGB_MARGIN_DB, (seed, s)
        assert s["rgb_only_psnr"] > s["blur_psnr"], (seed, s)
        assert bench.target_failures(s) == [], (seed, s)


def test_run_seeds_compares_per_seed_on_one_dataset() -> None:
    """The multi-seed plumbing, in seconds, with no training step: the RGB-only model outputs the
    blurry input (zero ``conv_last``) and VRT+Spike the S-SDM reading of its voxels, which equals
    the floor read from the raw stream when the window covers whole bins (here 4 of 32)."""
    bench = load_benchmark()
    synth = bench.SynthConfig(seed=0, train_clips=1, test_clips=1, frames=2, height=48, width=48, spike_steps=4)
    r = bench.run_seeds(bench.Setup(steps=0, synth=synth), (0, 1))
    runs = r["per_seed"]
    assert sorted(runs) == [0, 1]
    assert runs[0]["blur_psnr"] == runs[1]["blur_psnr"] and runs[0]["floor_psnr"] == runs[1]["floor_psnr"]
    for s in runs.values():
        assert s["rgb_only_psnr"] == pytest.approx(s["blur_psnr"], abs=1e-5)
        assert s["spike_psnr"] == pytest.approx(s["floor_psnr"], abs=1e-3)
        assert s["floor_psnr"] != s["blur_psnr"]
        misses = bench.target_failures(s)  # untrained: neither margin is met
        assert any("< spike floor" in m for m in misses) and any("< RGB-only" in m for m in misses)
    assert r["mean_over_floor_db"] == pytest.approx(0.0, abs=1e-3)


def test_diagnose_reports_gradients_and_what_reaches_the_output(capsys) -> None:
    bench = load_benchmark()
    synth = bench.SynthConfig(seed=0, train_clips=1, test_clips=1, frames=2, height=48, width=48, spike_steps=4)
    rows = bench.diagnose(bench.Setup(steps=2, synth=synth), None, [1, 2])
    assert [r["step"] for r in rows] == [1, 2]
    first, second = rows
    # step 1: the zero head and zero conv_last pass no gradient further back than themselves
    assert first["grad spike_head"] > 0 and first["grad vrt.conv_last"] > 0
    assert first["grad spike_encoder"] == 0 and first["grad fusion"] == 0
    assert first["rms spike_head"] == 0 and first["rms out(spikes)-out(0)"] > 0  # the sdm base already uses them
    # step 2: one Adam step made the head non-zero, so the encoder learns through it
    assert second["grad spike_encoder"] > 0 and second["rms spike_head"] > 0
    assert "grad spike_encoder" in capsys.readouterr().out
