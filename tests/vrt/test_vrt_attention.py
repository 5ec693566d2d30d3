"""Window attention: shift masks, SDPA vs explicit softmax, head-dim padding, caches."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vrt_spike.models.vrt import VRT
from vrt_spike.models.vrt.attention import (
    ShiftedWindows,
    WindowAttention,
    full_shift_mask,
    group_masks,
    group_order,
    shift_mask_pattern,
    window_partition,
)
from vrt_spike.models.vrt.sdpa import CpuFlashAttentionWithMaskGrad, padded_sdpa
from vrt_spike.models.vrt.tmsa import TMSAG

CPU = torch.device("cpu")


def _reference_mask(dhw: tuple[int, int, int], window: tuple[int, int, int], shift: tuple[int, int, int]) -> torch.Tensor:
    """The published construction: label the 27 shifted regions of the padded volume, partition
    into windows, mask token pairs from different regions with -100."""
    img = torch.zeros(1, *dhw, 1)
    cnt = 0
    for d, h, w in itertools.product(*[(slice(-ws), slice(-ws, -s), slice(-s, None)) for ws, s in zip(window, shift)]):
        img[:, d, h, w, :] = cnt
        cnt += 1
    ids = window_partition(img, window).squeeze(-1)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0)


@pytest.mark.parametrize(
    ("dhw", "window", "shift"),
    [((4, 8, 8), (2, 4, 4), (1, 2, 2)), ((6, 16, 8), (6, 8, 8), (3, 4, 4)), ((2, 12, 8), (2, 4, 4), (0, 2, 2)),
     ((4, 4, 4), (2, 4, 4), (1, 0, 0))],
)
def test_shift_masks_match_reference_construction(dhw, window, shift) -> None:
    grid = tuple(s // w for s, w in zip(dhw, window))
    mask = full_shift_mask(grid, window, shift, CPU)
    torch.testing.assert_close(mask, _reference_mask(dhw, window, shift), rtol=0, atol=0)
    assert set(mask.unique().tolist()) <= {0.0, -100.0}


def _paired_groups(mut_attn: bool, window: tuple[int, int, int], seed: int = 0) -> tuple[TMSAG, TMSAG]:
    torch.manual_seed(seed)
    kwargs = dict(dim=12, depth=2, num_heads=3, window_size=window, mut_attn=mut_attn, mlp_ratio=2.0,
                  qkv_bias=True, qk_scale=None, drop_path=0.0, norm_layer=torch.nn.LayerNorm,
                  use_checkpoint_attn=False, use_checkpoint_ffn=False)
    sdpa, explicit = TMSAG(**kwargs, attn_impl="sdpa"), TMSAG(**kwargs, attn_impl="explicit")
    with torch.no_grad():
        for p in sdpa.parameters():
            p.normal_(0, 0.3)
    explicit.load_state_dict(sdpa.state_dict())
    return sdpa, explicit


@pytest.mark.parametrize(
    ("mut_attn", "window", "dhw"),
    [(True, (2, 4, 4), (3, 10, 12)), (False, (3, 4, 4), (5, 9, 8)), (False, (4, 4, 4), (2, 3, 12)),
     (True, (2, 4, 4), (2, 4, 8))],
)
def test_sdpa_equals_explicit_outputs_and_gradients(mut_attn, window, dhw) -> None:
    sdpa, explicit = _paired_groups(mut_attn, window)
    x = torch.randn(2, 12, *dhw)
    outs, grads = [], []
    for group in (sdpa, explicit):
        xi = x.clone().requires_grad_(True)
        out = group(xi)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in group.parameters()])
    scale = outs[1].abs().max()
    assert (outs[0] - outs[1]).abs().max() / scale < 1e-5
    for g0, g1 in zip(*grads):
        assert (g0 - g1).abs().max() <= 1e-5 * g1.abs().max() + 1e-7


def _published_window_attention(attn: WindowAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The published formula, written out pair by pair: self attention with the relative
    position bias (+ shift mask), then mutual attention in which frame 2's queries attend frame
    1 (placed at frame 1's tokens) and frame 1's queries attend frame 2. ``mask``: ``(nW, N, N)``."""
    b_, n, c = x.shape
    h = attn.num_heads
    bias = attn.relative_position_bias_table[attn.relative_position_index[:n, :n].reshape(-1)]
    bias = bias.reshape(n, n, h).permute(2, 0, 1)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b_, -1, h, c // h).transpose(1, 2)

    def attend(q, k, v, relative_bias, m):
        scores = q * attn.scale @ k.transpose(-2, -1)
        if relative_bias is not None:
            scores = scores + relative_bias
        if m is not None:
            scores = (scores.view(-1, m.shape[0], h, *m.shape[1:]) + m[None, :, None]).view_as(scores)
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b_, q.shape[2], c)

    q, k, v = (heads(t) for t in attn.qkv_self(x).chunk(3, dim=-1))
    out = attend(q, k, v, bias, mask)
    if attn.mut_attn:
        q, k, v = (heads(t) for t in attn.qkv_mut(x + attn.position_bias.repeat(1, 2, 1)).chunk(3, dim=-1))
        m, half = None if mask is None else mask[:, : n // 2, : n // 2], n // 2
        x1_aligned = attend(q[:, :, half:], k[:, :, :half], v[:, :, :half], None, m)
        x2_aligned = attend(q[:, :, :half], k[:, :, half:], v[:, :, half:], None, m)
        out = torch.cat([torch.cat([x1_aligned, x2_aligned], 1), out], 2)
    return attn.proj(out)


@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
@pytest.mark.parametrize(("mut_attn", "grid", "shift"), [(True, (1, 2, 3), (0, 0, 0)), (True, (1, 2, 3), (1, 2, 2)),
                                                          (False, (2, 2, 1), (1, 2, 0))])
def test_window_attention_follows_the_published_formula(attn_impl, mut_attn, grid, shift) -> None:
    torch.manual_seed(0)
    window = (2, 4, 4)
    attn = WindowAttention(dim=12, window_size=window, num_heads=3, qkv_bias=True, mut_attn=mut_attn,
                           attn_impl=attn_impl)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2 * math.prod(grid), math.prod(window), 12)  # batch 2, windows in (b, d, h, w) order
    shifted = any(shift)
    mask = full_shift_mask(grid, window, shift, CPU) if shifted else None
    expected = _published_window_attention(attn, x, mask)
    out = attn(x, ShiftedWindows(grid, window, shift) if shifted else None)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_mutual_attention_runs_both_directions_in_one_call_per_mask_group() -> None:
    torch.manual_seed(0)
    attn = WindowAttention(dim=12, window_size=(2, 4, 4), num_heads=3, mut_attn=True)
    windows = ShiftedWindows((1, 2, 3), (2, 4, 4), (1, 2, 2))  # 4 mask groups
    for grid_windows, groups in ((None, 1), (windows, 4)):
        recorder = _SdpaMaskRecorder()  # one entry per SDPA call
        with torch.no_grad(), recorder:
            attn(torch.randn(2 * 6, 32, 12), grid_windows)
        assert len(recorder.masks) == 2 * groups  # self + mutual per group (was self + 2 mutual)


def test_full_model_sdpa_equals_explicit(tiny_kwargs: dict, randomize, tiny_clip, tiny_out) -> None:
    """Whole network, eval mode (gradients are compared per attention group above)."""
    explicit = randomize(VRT(**tiny_kwargs, attn_impl="explicit")).eval()  # same seed: same weights as tiny_vrt
    with torch.no_grad():
        out = explicit(tiny_clip)
    assert (tiny_out - out).abs().max() / (out - tiny_clip).abs().max() < 1e-5


@pytest.mark.parametrize(("mask_shape", "dtype", "tol"), [
    ((1, 3, 24, 24), torch.float64, 1e-12), ((24, 24), torch.float64, 1e-12), ((5, 3, 24, 24), torch.float32, 2e-6),
    ((1, 3, 24, 24), torch.bfloat16, 2e-2),  # CPU autocast: compared with the float64 math path
])
def test_cpu_flash_attention_differentiates_the_mask(mask_shape, dtype, tol) -> None:
    """Every gradient, the broadcast mask's included, equals autograd through the math path."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(5, 3, 24, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.randn(mask_shape, dtype=torch.float64)
    mask[..., :12, 12:] = -100.0  # shift-mask style blocks: rows whose mass sits in one half
    grad_out = torch.randn(5, 3, 24, 8, dtype=torch.float64)
    exact = dtype != torch.bfloat16
    reference = [t.to(dtype if exact else torch.float64).requires_grad_(True) for t in (q, k, v, mask)]
    inputs = [t.to(dtype).requires_grad_(True) for t in (q, k, v, mask)]
    math_out = torch.ops.aten._scaled_dot_product_attention_math(*reference[:3], attn_mask=reference[3], scale=0.3)[0]
    flash_out = CpuFlashAttentionWithMaskGrad.apply(*inputs, 0.3)
    assert flash_out.dtype == dtype
    assert (flash_out - math_out).abs().max() <= tol * math_out.abs().max()
    expected = torch.autograd.grad(math_out, reference, grad_out.to(math_out.dtype))
    actual = torch.autograd.grad(flash_out, inputs, grad_out.to(dtype))
    expected = [e.to(dtype) if not exact else e for e in expected]
    for name, a, e in zip(["q", "k", "v", "mask"], actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype == dtype, name
        assert (a.double() - e.double()).abs().max() <= tol * e.double().abs().max(), name


@pytest.mark.parametrize(("attn_impl", "keeps_scores"), [("sdpa", False), ("explicit", True)])
def test_training_attention_keeps_no_score_tensor_for_backward(attn_impl, keeps_scores) -> None:
    """A training forward on CPU saves no ``(windows, heads, N, N)`` tensor for backward (the
    learned bias needs a gradient, which the stock CPU SDPA only gives through its math path).
    Batch 2: every mask group holds 2 windows, so its scores are ``(2, heads, N, N)``, while the
    ``(1, heads, N, N)`` bias + mask it saves has one."""
    window, grid, heads = (2, 4, 4), (1, 2, 2), 2
    attn = WindowAttention(8, window, heads, mut_attn=True, attn_impl=attn_impl)
    x = torch.randn(2 * math.prod(grid), math.prod(window), 8, requires_grad=True)
    saved: list[torch.Size] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        out = attn(x, ShiftedWindows(grid, window, (1, 2, 2)))
    out.sum().backward()
    score_shaped = [s for s in saved if len(s) == 4 and s[0] > 1 and s[-1] == s[-2]]
    assert bool(score_shaped) == keeps_scores, score_shaped
    assert attn.relative_position_bias_table.grad.abs().sum() > 0


def test_head_dim_padding_is_exact_on_cpu() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 6, 64, 20, generator=gen, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, 6, 64, 64, generator=gen)
    scale = 20 ** -0.5
    plain = padded_sdpa(q, k, v, bias, scale, None)
    grads_plain = torch.autograd.grad(plain.sum(), (q, k, v))
    padded = padded_sdpa(q, k, v, bias, scale, 8)
    grads_padded = torch.autograd.grad(padded.sum(), (q, k, v))
    assert padded.shape == (4, 6, 64, 20)
    torch.testing.assert_close(padded, plain, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads_padded, grads_plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_head_dim_padding_in_attention_module() -> None:
    torch.manual_seed(0)
    attn = WindowAttention(dim=40, window_size=(1, 8, 8), num_heads=2, qkv_bias=True, mut_attn=False)
    x = torch.randn(3, 64, 40)
    plain = attn(x)
    attn.head_dim_multiple = 8  # head dim 20 -> 24
    torch.testing.assert_close(attn(x), plain, rtol=1e-6, atol=1e-6)


def test_shift_masks_and_window_orders_are_cached() -> None:
    for cache in (shift_mask_pattern, group_masks, group_order):
        cache.cache_clear()
    sdpa, _ = _paired_groups(True, (2, 4, 4))
    x = torch.randn(1, 12, 4, 8, 8)
    with torch.no_grad():
        sdpa(x)
        misses = [cache.cache_info().misses for cache in (shift_mask_pattern, group_masks, group_order)]
        sdpa(x)
    assert all(m > 0 for m in misses)
    for cache, first_misses in zip((shift_mask_pattern, group_masks, group_order), misses):
        assert cache.cache_info().misses == first_misses  # second call: nothing rebuilt


@pytest.mark.parametrize(("grid", "shift"), [((3, 2, 4), (1, 2, 0)), ((2, 3, 3), (1, 2, 2)), ((1, 1, 5), (0, 0, 2))])
def test_group_order_makes_each_mask_group_contiguous(grid, shift) -> None:
    window, batch = (2, 4, 4), 2
    windows = ShiftedWindows(grid, window, shift)
    order, inverse, sizes = group_order(windows, batch, CPU)
    assert sorted(order.tolist()) == list(range(batch * math.prod(grid)))
    ids = torch.arange(order.numel())
    assert torch.equal(ids[order][inverse], ids)
    per_window = full_shift_mask(grid, window, shift, CPU).repeat(batch, 1, 1)  # (B * nW, N, N), (b, d, h, w) order
    expected = group_masks(windows, math.prod(window), CPU, torch.float32)
    assert len(sizes) == expected.shape[0] and sum(sizes) == order.numel()
    for block, mask in zip(per_window[order].split(sizes), expected):
        assert torch.equal(block, mask.expand_as(block))


class _SdpaMaskRecorder(TorchDispatchMode):
    """Records the ``attn_mask`` of every fused SDPA call below autograd."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: list[torch.Tensor | None] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "scaled_dot_product" in func.name():
            self.masks.append(kwargs.get("attn_mask"))
        return func(*args, **kwargs)


def test_every_sdpa_mask_has_a_unit_stride_last_dim(tiny_vrt: VRT, tiny_clip) -> None:
    """CUDA's fused kernels refuse a mask whose last dim is strided and fall back to the math
    kernel (an N x N score tensor); CPU accepts any stride, so check the layout itself."""
    recorder = _SdpaMaskRecorder()
    with torch.no_grad(), recorder:
        tiny_vrt(tiny_clip)
    masks = [m for m in recorder.masks if m is not None]
    assert len(masks) > 20  # self attention (bias, bias + shift mask) and shifted mutual attention
    strides = sorted({m.stride()[-1] for m in masks})
    assert strides == [1], f"attn_mask last-dim strides {strides}"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_pads_head_dim_20(dtype: torch.dtype) -> None:
    """Stage-8 head dim 20 on CUDA: padded fused kernel agrees with the fp32 explicit softmax."""
    torch.manual_seed(0)
    fp32 = WindowAttention(dim=120, window_size=(6, 8, 8), num_heads=6, qkv_bias=True, mut_attn=False,
                           attn_impl="explicit").cuda()
    half = WindowAttention(dim=120, window_size=(6, 8, 8), num_heads=6, qkv_bias=True, mut_attn=False).cuda()
    half.load_state_dict(fp32.state_dict())
    x = torch.randn(8, 384, 120, device="cuda")
    ref = fp32(x)
    with torch.autocast("cuda", dtype=dtype):
        out = half(x)
    assert out.dtype == dtype
    assert ((out.float() - ref).abs().max() / ref.abs().max()).item() < 2e-2


def test_training_after_a_first_forward_in_inference_mode(tiny_kwargs: dict) -> None:
    """Lightning validates under inference_mode before training: the per-shape caches filled by
    that first call must still be usable by a training step."""
    torch.manual_seed(0)
    model = VRT(**tiny_kwargs)
    clip = torch.rand(1, 4, 3, 40, 40)
    with torch.inference_mode():
        model(clip)
    model.train()
    model(clip).mean().backward()
    assert model.stage1.residual_group1.blocks[0].attn.relative_position_bias_table.grad is not None
