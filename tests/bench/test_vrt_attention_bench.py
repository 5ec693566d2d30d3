"""``benchmarks/vrt_attention.py``: its worker measures a step and says which attention kernels ran."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "vrt_attention.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("vrt_attention_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(bench, impl: str, mode: str) -> dict:
    argv = ["--config", "tiny", "--size", "40", "--frames", "3", "--steps", "1", "--warmup", "0",
            "--device", "cpu", "--mode", mode, "--worker", impl]
    return bench._worker(bench._parse(argv))


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_worker_counts_which_attention_kernels_ran(bench, mode: str) -> None:
    sdpa, explicit = _run(bench, "sdpa", mode), _run(bench, "explicit", mode)
    assert explicit["fused_attn"] == 0 and explicit["softmax"] > 0
    # SDPA makes one call per shift-mask group where explicit makes one per attention.
    assert sdpa["fused_attn"] + sdpa["softmax"] > explicit["softmax"]
    if mode == "infer":
        assert sdpa["softmax"] == 0  # CPU flash kernel for every call, bias and masks included
    else:
        # CPU SDPA has no fused kernel for a mask that needs a gradient: self attention (learned
        # bias) falls back to math, mutual attention (masks only) stays fused.
        assert sdpa["softmax"] > 0 and sdpa["fused_attn"] > 0
    for r in (sdpa, explicit):
        assert r["median_s"] > 0 and r["ops"] > 100


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_every_cuda_bf16_attention_runs_a_fused_kernel(bench, mode: str) -> None:
    """On CUDA the bias that needs a gradient is no obstacle: no call may fall back to math."""
    argv = ["--config", "tiny", "--size", "40", "--frames", "3", "--steps", "1", "--warmup", "0",
            "--device", "cuda", "--dtype", "bf16", "--mode", mode, "--worker", "sdpa"]
    r = bench._worker(bench._parse(argv))
    assert r["fused_attn"] > 0 and r["softmax"] == 0, r
