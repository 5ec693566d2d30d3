"""3-D window attention of VRT: windows, shift masks, relative position bias, mutual attention.

Numbers follow the official VRT exactly (shift masks filled with -100, not -inf; the mutual
attention reuses the top-left quarter of the shift mask; relative-position indices are sliced
``[:N, :N]`` when a window shrinks). The fast path runs
:func:`torch.nn.functional.scaled_dot_product_attention` once per *mask pattern*: in a shifted
window grid only the last window along each axis sees a non-zero mask, so at most 8 patterns
exist and each is a small ``(N, N)`` tensor shared by all windows of its group. The windows are
permuted once so that every group is a contiguous run of the batch dim: the groups are then
``split`` views (backward: one ``cat``), not gathers whose backward writes a full-size zero
gradient per group. No ``(windows, heads, N, N)`` mask or score tensor is materialised.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Literal, TypeVar

import torch
from einops import rearrange
from torch import Tensor, nn

from vrt_spike.models.vrt.sdpa import padded_sdpa

AttnImpl = Literal["sdpa", "explicit"]
SHIFT_MASK_FILL = -100.0  # the official value; -inf would change the numbers of fully masked rows
_Fn = TypeVar("_Fn", bound=Callable[..., object])


_SHAPE_CACHES: list[Callable[[], None]] = []  # each cache's cache_clear


def shape_cache(maxsize: int) -> Callable[[_Fn], _Fn]:
    """``lru_cache`` for the pure mask/order builders below, bypassed while ``torch.compile``
    traces: the compiled graph then holds the builder's ops itself, and Dynamo does not warn
    that it skipped a cache it cannot guard. ``cache_info`` / ``cache_clear`` are kept."""

    def decorate(fn: _Fn) -> _Fn:
        cached = lru_cache(maxsize=maxsize)(fn)
        _SHAPE_CACHES.append(cached.cache_clear)

        @wraps(fn)
        def call(*args: object) -> object:
            return fn(*args) if torch.compiler.is_compiling() else cached(*args)

        call.cache_info = cached.cache_info  # type: ignore[attr-defined]
        call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate


def clear_shape_caches() -> None:
    """Empty every mask/order cache: a traced run (fake tensors of a memory plan) must neither
    receive the masks of a real one nor leave its own behind (the caches key on shapes and device)."""
    for clear in _SHAPE_CACHES:
        clear()


def get_window_size(
    x_size: tuple[int, int, int], window_size: tuple[int, ...], shift_size: tuple[int, ...]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Shrink the window (and drop the shift) along every axis the input does not exceed."""
    window = list(window_size)
    shift = list(shift_size)
    for axis, size in enumerate(x_size):
        if size <= window_size[axis]:
            window[axis] = size
            shift[axis] = 0
    return (window[0], window[1], window[2]), (shift[0], shift[1], shift[2])


def window_partition(x: Tensor, window: tuple[int, int, int]) -> Tensor:
    """``(B, D, H, W, C) -> (B * nW, Wd * Wh * Ww, C)``, windows ordered (b, d, h, w)."""
    wd, wh, ww = window
    return rearrange(x, "b (d wd) (h wh) (w ww) c -> (b d h w) (wd wh ww) c", wd=wd, wh=wh, ww=ww)


def window_reverse(windows: Tensor, window: tuple[int, int, int], b: int, d: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, N, C) -> (B, D, H, W, C)``."""
    wd, wh, ww = window
    return rearrange(
        windows, "(b d h w) (wd wh ww) c -> b (d wd) (h wh) (w ww) c",
        b=b, d=d // wd, h=h // wh, w=w // ww, wd=wd, wh=wh, ww=ww,
    )


def relative_position_index(window: tuple[int, int, int]) -> Tensor:
    """``(N, N)`` index into the ``(2Wd-1)(2Wh-1)(2Ww-1)`` bias table for every token pair."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(s) for s in window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 3)
    rel = rel + torch.tensor([s - 1 for s in window])
    strides = torch.tensor([(2 * window[1] - 1) * (2 * window[2] - 1), 2 * window[2] - 1, 1])
    return (rel * strides).sum(-1)


def sine_position_encoding(hw: tuple[int, int], num_pos_feats: int, temperature: float = 10000.0) -> Tensor:
    """Normalised 2-D sine encoding (DETR style) of an ``(H, W)`` window: ``(1, H * W, 2 * num_pos_feats)``."""
    scale, eps = 2 * math.pi, 1e-6
    ones = torch.ones(1, hw[0], hw[1])
    y_embed = ones.cumsum(1, dtype=torch.float32)
    x_embed = ones.cumsum(2, dtype=torch.float32)
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    pos_x = x_embed[..., None] / dim_t
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).flatten(1, 2).contiguous()


def _axis_regions(window: int, shift: int, last: bool, device: torch.device) -> Tensor:
    """Region id of each in-window position along one axis (0: untouched, 1/2: the two shifted parts)."""
    position = torch.arange(window, device=device)
    if last and shift > 0:
        return 1 + (position >= window - shift).long()
    return torch.full((window,), 2 if last else 0, dtype=torch.long, device=device)


@shape_cache(maxsize=256)
def shift_mask_pattern(
    window: tuple[int, int, int], shift: tuple[int, int, int], last: tuple[bool, bool, bool], device: torch.device
) -> Tensor:
    """``(N, N)`` additive mask (0 / -100) of one window, given whether it is last along d, h, w.

    Built on ``device`` from shapes alone (no host tensor is copied over): under ``torch.compile``,
    where the cache steps aside, the graph computes it on the device.
    """
    with torch.inference_mode(False):  # cached across calls: never an inference tensor
        rd, rh, rw = (_axis_regions(window[a], shift[a], last[a], device) for a in range(3))
        ids = (rd[:, None, None] * 9 + rh[None, :, None] * 3 + rw[None, None, :]).flatten()
        return torch.zeros(ids.numel(), ids.numel(), device=device).masked_fill_(ids[None, :] != ids[:, None],
                                                                                 SHIFT_MASK_FILL)


@shape_cache(maxsize=64)
def full_shift_mask(
    grid: tuple[int, int, int], window: tuple[int, int, int], shift: tuple[int, int, int], device: torch.device
) -> Tensor:
    """``(nW, N, N)`` mask of every window of a ``grid`` of windows (explicit-softmax reference path)."""
    rows = [
        shift_mask_pattern(window, shift, (i == grid[0] - 1, j == grid[1] - 1, k == grid[2] - 1), device)
        for i, j, k in itertools.product(range(grid[0]), range(grid[1]), range(grid[2]))
    ]
    with torch.inference_mode(False):
        return torch.stack(rows)


@dataclass(frozen=True)
class ShiftedWindows:
    """Window grid of a shifted-window layer: what the masks depend on."""

    grid: tuple[int, int, int]  # windows along d, h, w (per batch element)
    window: tuple[int, int, int]
    shift: tuple[int, int, int]

    def groups(self) -> list[tuple[tuple[slice, slice, slice], tuple[bool, bool, bool]]]:
        """Split the grid into at most 8 blocks of windows sharing one mask pattern."""
        per_axis = []
        for n, s in zip(self.grid, self.shift):
            if s == 0:
                per_axis.append([(slice(None), n == 1)])  # the pattern is uniform along this axis
            else:
                parts = [(slice(0, n - 1), False)] if n > 1 else []
                per_axis.append(parts + [(slice(n - 1, n), True)])
        return [
            ((a[0], b[0], c[0]), (a[1], b[1], c[1])) for a, b, c in itertools.product(*per_axis)
        ]


@shape_cache(maxsize=64)
def group_order(windows: ShiftedWindows, batch: int, device: torch.device) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """Permutation of the ``batch * nW`` windows that makes each mask group contiguous.

    Returns ``(order, inverse, sizes)``: ``x[order]`` lists the windows group by group in
    :meth:`ShiftedWindows.groups` order, ``sizes`` windows each; ``y[inverse]`` undoes it.
    """
    with torch.inference_mode(False):  # cached across calls: never an inference tensor
        ids = torch.arange(batch * math.prod(windows.grid), device=device).view(batch, *windows.grid)
        blocks = [ids[(slice(None), *index)].flatten() for index, _ in windows.groups()]
        order = torch.cat(blocks)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=device)
        return order, inverse, tuple(block.numel() for block in blocks)


@shape_cache(maxsize=256)
def group_masks(windows: ShiftedWindows, n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(G, 1, n, n)``: the mask pattern of each group of :meth:`ShiftedWindows.groups`, first ``n`` tokens."""
    with torch.inference_mode(False):
        patterns = [shift_mask_pattern(windows.window, windows.shift, last, device)[:n, :n] for _, last in windows.groups()]
        return torch.stack(patterns).unsqueeze(1).to(dtype)


class WindowAttention(nn.Module):
    """Multi-head self attention in 3-D windows, plus mutual attention between the two frames.

    Args:
        dim: channels C.
        window_size: ``(Wd, Wh, Ww)`` of the full window (bias table and sine encoding size).
        num_heads: heads; head dim ``C // num_heads``.
        qkv_bias: bias of the q/k/v projections.
        qk_scale: overrides ``head_dim ** -0.5``.
        mut_attn: add mutual attention (frame 1 <-> frame 2 of a 2-frame window).
        attn_impl: ``"sdpa"`` (fused kernels) or ``"explicit"`` (softmax of the full score tensor,
            as the official code does).

    Input ``(B * nW, N, C)`` -> output ``(B * nW, N, C)``.
    """

    head_dim_multiple: int | None = None  # None: pad to 8 for fp16/bf16 on CUDA, else no padding

    def __init__(
        self,
        dim: int,
        window_size: tuple[int, int, int],
        num_heads: int,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        mut_attn: bool = True,
        attn_impl: AttnImpl = "sdpa",
    ) -> None:
        super().__init__()
        if attn_impl not in ("sdpa", "explicit"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'explicit', got {attn_impl!r}")
        self.dim = dim
        self.window_size = tuple(window_size)
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.mut_attn = mut_attn
        self.attn_impl: AttnImpl = attn_impl

        num_rel = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) * (2 * window_size[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_rel, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))
        self.qkv_self = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(2 * dim if mut_attn else dim, dim)
        if mut_attn:
            self.register_buffer("position_bias", sine_position_encoding(self.window_size[1:], dim // 2))
            self.qkv_mut = nn.Linear(dim, dim * 3, bias=qkv_bias)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, windows: ShiftedWindows | None = None) -> Tensor:
        b_, n, c = x.shape
        grouped = windows is not None and self.attn_impl == "sdpa"
        if grouped:  # windows group by group; every per-window op below is order-agnostic
            order, inverse, _ = group_order(windows, b_ // math.prod(windows.grid), x.device)
            x = x.index_select(0, order)
        q, k, v = rearrange(self.qkv_self(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        out = rearrange(self._attend(q, k, v, windows, self._relative_bias(n), n), "b h n d -> b n (h d)")
        if self.mut_attn:
            out = torch.cat([self._mutual(x, windows), out], 2)
        out = self.proj(out)
        return out.index_select(0, inverse) if grouped else out

    def _relative_bias(self, n: int) -> Tensor:
        """``(1, nH, N, N)`` relative position bias of the first ``n`` tokens (official slicing).

        The index is a view of the registered ``(N, N)`` buffer, so nothing is rebuilt per call
        and no module state changes (``torch.compile`` traces it without a graph break).
        Contiguous on purpose: CUDA's fused SDPA kernels reject an ``attn_mask`` whose last dim
        is not unit-stride and silently run the math fallback (an N x N score tensor per call).
        """
        index = self.relative_position_index[:n, :n]
        return self.relative_position_bias_table.t()[:, index].contiguous().unsqueeze(0)

    def _mutual(self, x: Tensor, windows: ShiftedWindows | None) -> Tensor:
        """Mutual attention of a 2-frame window ``(B * nW, 2M, C) -> (B * nW, 2M, C)``.

        Frame 1's tokens get frame 2's queries attending frame 1 (``x1_aligned`` upstream), frame
        2's tokens frame 1's queries attending frame 2. Both directions run as one attention over
        ``2 nH`` heads: with the frames stacked on the head axis, swapping the query frames pairs
        every query with the other frame's keys and values. Heads are independent, so this equals
        two separate attentions, in half the kernel calls.
        """
        qkv = self.qkv_mut(x + self.position_bias.repeat(1, 2, 1))
        q, k, v = rearrange(qkv, "b (f m) (three h d) -> three b (f h) m d", f=2, three=3, h=self.num_heads)
        q = q.roll(self.num_heads, dims=1)  # (q1, q2) -> (q2, q1)
        aligned = self._attend(q, k, v, windows, None, x.shape[1] // 2)
        return rearrange(aligned, "b (f h) m d -> b (f m) (h d)", f=2)

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, windows: ShiftedWindows | None, bias: Tensor | None, n: int
    ) -> Tensor:
        """Attention of ``(B * nW, heads, n, d)`` tensors -> ``(B * nW, heads, n, d)``."""
        if self.attn_impl == "explicit":
            return self._explicit(q, k, v, windows, bias, n)
        return self._sdpa(q, k, v, windows, bias, n)

    def _explicit(
        self, q: Tensor, k: Tensor, v: Tensor, windows: ShiftedWindows | None, bias: Tensor | None, n: int
    ) -> Tensor:
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if bias is not None:
            attn = attn + bias
        if windows is not None:
            mask = full_shift_mask(windows.grid, windows.window, windows.shift, q.device)[:, :n, :n]
            heads = q.shape[1]
            attn = attn.view(-1, mask.shape[0], heads, n, n) + mask.to(attn.dtype)[None, :, None]
            attn = attn.view(-1, heads, n, n)
        return attn.softmax(dim=-1) @ v

    def _sdpa(
        self, q: Tensor, k: Tensor, v: Tensor, windows: ShiftedWindows | None, bias: Tensor | None, n: int
    ) -> Tensor:
        multiple = self.head_dim_multiple
        if multiple is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
            multiple = 8
        if bias is not None:
            bias = bias.to(q.dtype)
        if windows is None:
            return padded_sdpa(q, k, v, bias, self.scale, multiple)
        # q, k, v arrive group by group (see forward): one mask per group, split views per group.
        _, _, sizes = group_order(windows, q.shape[0] // math.prod(windows.grid), q.device)
        masks = group_masks(windows, n, q.device, q.dtype)  # (G, 1, n, n)
        if bias is not None:
            masks = masks + bias  # (G, nH, n, n): one add for all groups
        blocks = [
            padded_sdpa(qg, kg, vg, mask, self.scale, multiple)
            for qg, kg, vg, mask in zip(q.split(sizes), k.split(sizes), v.split(sizes), masks.split(1))
        ]
        return torch.cat(blocks) if len(blocks) > 1 else blocks[0]
