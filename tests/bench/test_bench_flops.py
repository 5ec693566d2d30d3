"""FLOP counting: torch's counter plus the analytic deform-conv and CPU-SDPA formulas agree with
hand-derived counts of small modules."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vrt_spike.models.vrt.deform_conv import modulated_deform_conv2d
from vrt_spike.bench.flops import (
    BILINEAR_SAMPLE_FLOPS, DEFORM_BACKWARD_SAMPLING_FACTOR, MASK_FLOPS, count_flops,
    deform_conv2d_flops, deform_conv_op_names,
)


class ConvAttention(nn.Module):
    """conv 3x3 -> multi-head self-attention over pixels (SDPA) -> linear projection."""

    def __init__(self, c_in: int = 3, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.conv = nn.Conv2d(c_in, dim, 3, padding=1)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x).flatten(2).transpose(1, 2)  # (B, N, C)
        b, n, c = f.shape
        q, k, v = self.qkv(f).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        return self.proj(a.transpose(1, 2).reshape(b, n, c))


def _analytic_conv_attention(b: int, c_in: int, dim: int, heads: int, h: int, w: int) -> dict:
    n = h * w
    d = dim // heads
    conv = 2 * b * dim * n * c_in * 9
    qkv = 2 * b * n * dim * 3 * dim
    attn = 2 * (2 * b * heads * n * n * d)  # Q K^T and P V
    proj = 2 * b * n * dim * dim
    fwd = conv + qkv + attn + proj
    # backward: grad-input and grad-weight of every matmul/conv (2x), except the first conv's
    # input, which needs no gradient (1x); attention backward = 5 matmuls of the forward size
    # (scores recomputed, dV, dP, dQ, dK).
    bwd = 2 * (qkv + proj) + conv + 5 * (2 * b * heads * n * n * d)
    return {"fwd": fwd, "train": fwd + bwd}


def test_conv_attention_forward_and_backward_match_analytic_within_1_percent() -> None:
    b, c_in, dim, heads, h, w = 2, 3, 16, 2, 8, 8
    net = ConvAttention(c_in, dim, heads)
    x = torch.rand(b, c_in, h, w)
    expected = _analytic_conv_attention(b, c_in, dim, heads, h, w)

    fwd = count_flops(lambda: net(x))
    assert fwd.total == pytest.approx(expected["fwd"], rel=0.01)

    train = count_flops(lambda: net(x).square().mean().backward())
    assert train.total == pytest.approx(expected["train"], rel=0.01)
    assert any("flash_attention_for_cpu_backward" in op for op in train.by_op)


def test_cpu_sdpa_is_counted_although_torch_registry_misses_it() -> None:
    q = torch.rand(1, 2, 32, 8)
    with FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(q, q, q)
    ours = count_flops(lambda: F.scaled_dot_product_attention(q, q, q))
    assert plain.get_total_flops() == 0  # the gap the extra formula fills
    assert ours.total == 2 * (2 * 2 * 32 * 32 * 8)


@pytest.mark.parametrize("use_mask", [True, False])
def test_deform_conv_counts_follow_documented_formula(use_mask: bool) -> None:
    b, c_in, c_out, groups, h, w = 2, 8, 6, 2, 10, 12
    x = torch.rand(b, c_in, h, w, requires_grad=True)
    weight = torch.rand(c_out, c_in // groups, 3, 3, requires_grad=True)
    offset = torch.rand(b, 2 * 9, h // 2, w // 2, requires_grad=True)
    mask = torch.rand(b, 9, h // 2, w // 2, requires_grad=True) if use_mask else None

    def dcn() -> torch.Tensor:
        return torchvision.ops.deform_conv2d(x, offset, weight, stride=2, padding=1, mask=mask)

    ho, wo = h // 2, w // 2
    matmul = 2 * b * c_out * ho * wo * (c_in // groups) * 9
    sampling = b * c_in * 9 * ho * wo * (BILINEAR_SAMPLE_FLOPS + (MASK_FLOPS if use_mask else 0))
    fwd = count_flops(dcn)
    assert fwd.total == matmul + sampling
    train = count_flops(lambda: dcn().sum().backward())
    assert train.total == 3 * matmul + (1 + DEFORM_BACKWARD_SAMPLING_FACTOR) * sampling
    assert set(train.by_op) == {"torchvision.deform_conv2d", "torchvision._deform_conv2d_backward"}


def test_cpu_deform_conv_is_counted_like_torchvision_s() -> None:
    """VRT's CPU alignment runs our op, not torchvision's: same FLOPs, from our op's entries."""
    x = torch.rand(2, 8, 6, 7, requires_grad=True)
    offset = torch.rand(2, 2 * 2 * 9, 6, 7, requires_grad=True)
    mask = torch.rand(2, 2 * 9, 6, 7, requires_grad=True)
    weight = torch.rand(5, 8, 3, 3, requires_grad=True)
    bias = torch.rand(5, requires_grad=True)
    for step in (lambda out: out, lambda out: out.sum().backward()):
        ours = count_flops(lambda: step(modulated_deform_conv2d(x, offset, mask, weight, bias)))
        ref = count_flops(lambda: step(torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)))
        assert ours.total == ref.total > 0
        assert set(ours.by_op) <= set(deform_conv_op_names()) - set(ref.by_op)


def test_deform_conv_matmul_part_equals_torch_count_of_the_dense_conv() -> None:
    """Independent check of the matmul term: torch's own formula for a dense conv, same shapes."""
    x = torch.rand(1, 4, 9, 9)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
    with FlopCounterMode(display=False) as counter:
        out = conv(x)
    split = deform_conv2d_flops(x.shape, conv.weight.shape, out.shape, use_mask=True)
    assert split.matmul == counter.get_total_flops()
    assert split.sampling == 1 * 4 * 9 * 81 * (BILINEAR_SAMPLE_FLOPS + MASK_FLOPS)


def test_module_attribution_names_submodules() -> None:
    net = ConvAttention()
    counted = count_flops(lambda: net(torch.rand(1, 3, 4, 4)))
    assert counted.by_module["ConvAttention.conv"] == 2 * 16 * 16 * 3 * 9
    assert counted.by_module["ConvAttention"] == counted.total
