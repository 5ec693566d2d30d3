"""``benchmarks/vrt_attention.py``: its instruments (operator counter, the CPU memory worker's probe), the
official model's weights, and (CUDA) that every bf16 attention runs a fused kernel. Which kernels the CPU
runs is asserted by ``tests/vrt/test_vrt_attention.py``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import vrt_attention


@pytest.fixture(scope="module")
def bench():
    return vrt_attention


def _run(bench, impl: str, mode: str) -> dict:
    argv = ["--config", "tiny", "--size", "40", "--frames", "3", "--steps", "1", "--warmup", "0",
            "--device", "cpu", "--mode", mode, "--worker", impl]
    return bench._worker(bench._parse(argv))


def test_op_counter_tells_views_from_kernels(bench) -> None:
    x = torch.randn(4, 6)
    counter = bench._OpCounter()
    with counter:
        y = x.view(6, 4).t().detach()  # three views
        z = (y + 1).softmax(-1)  # two kernels
        (x @ x.t()).sum()  # t: a view; mm, sum: kernels
    assert (counter.ops, counter.kernels, counter.softmax) == (8, 4, 1)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_every_cuda_bf16_attention_runs_a_fused_kernel(bench, mode: str) -> None:
    """On CUDA the bias that needs a gradient is no obstacle: no call may fall back to math."""
    argv = ["--config", "tiny", "--size", "40", "--frames", "3", "--steps", "1", "--warmup", "0",
            "--device", "cuda", "--dtype", "bf16", "--mode", mode, "--worker", "sdpa"]
    r = bench._worker(bench._parse(argv))
    assert r["fused_attn"] > 0 and r["softmax"] == 0, r


def test_cpu_memory_worker_sees_a_step_past_a_warm_heap(bench) -> None:
    """After 256 MiB were allocated and freed, a step holding 64 MiB in 1 MiB tensors must read
    ~64 MiB and an empty step ~0 (`PeakMemory.rise`), in a process started the way the memory worker
    is (with ``CPU_MEMORY_ENV``, whatever MALLOC_* settings the caller has)."""
    code = (
        "import torch\n"
        "from vrt_spike.timing.memory import PeakMemory\n"
        "warm = torch.ones(256 * 2**20 // 4); del warm\n"
        "def peak(step):\n"
        "    memory = PeakMemory(torch.device('cpu'))\n"
        "    memory.reset()\n"
        "    step()\n"
        "    return memory.rise() / 2**20\n"
        "def step():\n"
        "    held = [torch.ones(2**20 // 4) for _ in range(64)]  # 64 x 1 MiB, live together\n"
        "    del held\n"
        "print(peak(step), peak(lambda: None))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**clean, **bench.CPU_MEMORY_ENV}).stdout
    held, empty = map(float, out.split())
    assert 63 <= held <= 70 and empty < 1, out


def test_official_needs_the_upstream_directory(bench, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VRT_OFFICIAL_DIR", raising=False)
    with pytest.raises(SystemExit):
        bench._parse(["--impls", "sdpa", "official"])
    with pytest.raises(FileNotFoundError, match=r"network_vrt\.py"):
        bench.load_official_vrt(str(tmp_path))


def test_official_model_gets_the_same_weights_as_ours(bench, tmp_path: Path) -> None:
    # Stand-in for upstream network_vrt.py (not available offline): any module with a VRT class
    # that loads our state dict strictly; the benchmark must hand it our seeded weights.
    (tmp_path / "network_vrt.py").write_text(
        "from vrt_spike.models.vrt import VRT as _Ours\n\nclass VRT(_Ours):\n    pass\n"
    )
    argv = ["--config", "tiny", "--official-dir", str(tmp_path), "--worker"]
    ours = bench.build_model(bench._parse([*argv, "sdpa"]))
    theirs = bench.build_model(bench._parse([*argv, "official"]))
    assert type(theirs).__module__ == "official_network_vrt"
    state = theirs.state_dict()
    assert all(torch.equal(t, state[k]) for k, t in ours.state_dict().items())


def test_compile_variants_need_a_warmup_and_build_the_same_model(bench) -> None:
    with pytest.raises(SystemExit):
        bench._parse(["--compile", "--warmup", "0"])  # the compiling step must not be timed
    argv = ["--config", "tiny", "--compile", "--worker"]
    compiled_args = bench._parse([*argv, "explicit+compile"])
    assert bench._impl(compiled_args.worker) == "explicit"
    model = bench.build_model(compiled_args)
    assert {m.attn_impl for m in model.modules() if hasattr(m, "attn_impl")} == {"explicit"}
