"""`run_benchmark` on a small stand-in network: every row field filled and consistent, FLOPs equal
to the hand count, precisions handled."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vrt_spike.bench import (
    BenchSpec, checkpointing_summary, print_report, run_benchmark, set_checkpointing,
)
from vrt_spike.profiling.results import FIELDS


class ClipConvAttention(nn.Module):
    """forward(rgb (B,T,3,H,W), spike (B,T,K,H,W)) -> (B,T,3,H,W): conv, pixel attention, conv."""

    def __init__(self, k: int, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.inp = nn.Conv2d(3 + k, dim, 3, padding=1)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Conv2d(dim, 3, 3, padding=1)

    def forward(self, rgb: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = rgb.shape
        f = self.inp(torch.cat([rgb, spike], 2).flatten(0, 1))  # (BT, C, H, W)
        n, c = h * w, f.shape[1]
        q, k, v = (self.qkv(f.flatten(2).transpose(1, 2))
                   .view(b * t, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b * t, n, c)
        f = f + a.transpose(1, 2).reshape(b * t, c, h, w)
        return self.out(f).unflatten(0, (b, t))


def analytic_flops(b: int, t: int, k: int, hw: int, dim: int = 8, heads: int = 2) -> tuple[int, int]:
    """(forward, training step) FLOPs of ClipConvAttention, derived by hand."""
    bt, n, d = b * t, hw * hw, dim // heads
    conv_in = 2 * bt * dim * n * (3 + k) * 9
    qkv = 2 * bt * n * dim * 3 * dim
    attn = 2 * (2 * bt * heads * n * n * d)
    conv_out = 2 * bt * 3 * n * dim * 9
    fwd = conv_in + qkv + attn + conv_out
    # grad-input + grad-weight for all but the first conv (weight only); SDPA backward 5 matmuls
    bwd = conv_in + 2 * (qkv + conv_out) + 5 * attn // 2
    return fwd, fwd + bwd


META = dict(label="toy", model="toy", optimizer="adamw", checkpointing="off")


def _spec(precision: str = "32", **kw) -> BenchSpec:
    args = dict(batch_size=2, clip_len=3, crop_size=8, num_bins=4, warmup=1, iters=3,
                breakdown_steps=0, precision=precision, device=torch.device("cpu"))
    args.update(kw)
    return BenchSpec(**args)


def test_row_complete_consistent_and_flops_match_hand_count(capsys: pytest.CaptureFixture) -> None:
    net = ClipConvAttention(k=4)
    spec = _spec(peak_tflops=0.5)
    result = run_benchmark(net, torch.optim.AdamW(net.parameters()), nn.L1Loss(), spec,
                           use_spike=True, meta=META)
    row = result.row
    assert tuple(row) == FIELDS
    blanks = [k for k, v in row.items() if v is None or v == "" or v == {}]
    assert blanks == ["sweep_id", "overrides", "stage_ms"]  # no sweep, no overrides, breakdown off
    for key in ("train_step_ms_median", "train_step_ms_p10", "infer_ms_median",
                "train_peak_mem_mib", "infer_peak_mem_mib", "train_mfu", "infer_mfu"):
        assert row[key] > 0, key
    assert row["train_step_ms_p10"] <= row["train_step_ms_median"] <= row["train_step_ms_p90"]
    step_s = row["train_step_ms_median"] / 1e3
    assert row["train_samples_per_s"] == pytest.approx(2 / step_s)
    assert row["train_frames_per_s"] == pytest.approx(2 * 3 / step_s)
    assert row["infer_samples_per_s"] == pytest.approx(2 / (row["infer_ms_median"] / 1e3))
    fwd, train = analytic_flops(2, 3, 4, 8)
    assert row["infer_flops_per_forward"] == pytest.approx(fwd, rel=0.01)
    assert row["train_flops_per_step"] == pytest.approx(train, rel=0.01)
    assert row["train_deform_flops"] == 0
    assert row["train_mfu"] == pytest.approx(train / step_s / 0.5e12, rel=0.01)
    assert row["params"] == sum(p.numel() for p in net.parameters())
    assert row["mem_kind"].startswith("cpu_rss")
    assert row["compute_dtype"] == "tf32" or row["compute_dtype"] == "fp32"

    text = print_report(result)
    assert "samples/s" in text and "[p10, p90]" in text and "MFU" in text
    assert text in capsys.readouterr().out


def test_optimizer_steps_and_bf16_mixed_runs() -> None:
    net = ClipConvAttention(k=4)
    before = [p.detach().clone() for p in net.parameters()]
    row = run_benchmark(net, torch.optim.AdamW(net.parameters(), lr=1e-2), nn.L1Loss(),
                        _spec("bf16-mixed"), use_spike=True, meta=META).row
    assert all(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert row["compute_dtype"] == "bf16"
    assert row["train_mfu"] is None and "n/a on cpu" in row["peak_source"]
    assert math.isfinite(row["train_step_ms_median"])


def test_bad_spec_names_the_key() -> None:
    with pytest.raises(ValueError, match="bench.iters must be >= 1"):
        _spec(iters=0)
    with pytest.raises(ValueError, match="trainer.precision"):
        _spec("64")


def test_checkpointing_summary_lists_switches() -> None:
    cfg = {"vrt": {"use_checkpoint_attn": True, "use_checkpoint_ffn": False,
                   "no_checkpoint_attn_blocks": [1]},
           "spike_tsa": {"use_checkpoint": True}}
    assert checkpointing_summary(cfg) == "vrt.use_checkpoint_attn+spike_tsa.use_checkpoint"
    assert checkpointing_summary({"vrt": {"use_checkpoint_attn": False}}) == "off"
    off = set_checkpointing(cfg, on=False)
    assert checkpointing_summary(off) == "off"
    assert off["vrt"]["no_checkpoint_attn_blocks"] == [1] and cfg["spike_tsa"]["use_checkpoint"]
    assert checkpointing_summary(set_checkpointing(cfg, on=True)) == (
        "vrt.use_checkpoint_attn+vrt.use_checkpoint_ffn+spike_tsa.use_checkpoint")


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed"])
def test_cuda_row_uses_allocator_stats_events_and_peak_table(precision: str) -> None:
    dev = torch.device("cuda")
    # Head dim 8: CUDA's flash kernel (bf16/fp16) zero-pads head dims to a multiple of 8 and the
    # counter then counts the padded (executed) work; a head dim of 4 would count twice the
    # analytic attention FLOPs (measured on an H100).
    net = ClipConvAttention(k=4, dim=16).to(dev)
    row = run_benchmark(net, torch.optim.AdamW(net.parameters()), nn.L1Loss(),
                        _spec(precision, device=dev), use_spike=True, meta=META).row
    assert row["mem_kind"] == "cuda_max_allocated"
    assert row["train_peak_mem_mib"] > 0 and row["infer_peak_mem_mib"] > 0
    assert row["train_step_ms_median"] > 0
    fwd, train = analytic_flops(2, 3, 4, 8, dim=16)
    assert row["train_flops_per_step"] == pytest.approx(train, rel=0.01)
    if row["peak_tflops"] is not None:
        assert 0 < row["train_mfu"] < 1 and row["peak_source"].startswith("table:")
