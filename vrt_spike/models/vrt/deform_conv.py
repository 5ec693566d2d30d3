"""Modulated deformable convolution (DCNv2) for VRT's flow-guided alignment.

On CUDA this is :func:`torchvision.ops.deform_conv2d`. On CPU, torchvision's kernel runs on one
thread whatever ``torch.get_num_threads()`` says (its backward took 28 % of a CPU training step),
so the CPU path is the same function written with ops that use every core: one
``grid_sample`` per deformable group gathers the ``kh * kw`` bilinear samples of every output
pixel, the modulation mask scales them, and one matmul with the weight mixes them (torchvision's
im2col + GEMM, with the sampling done by ``grid_sample``). Its backward is written out in the
same terms (``grid_sampler_2d_backward`` gives the input and sampling-position gradients) and
keeps only the inputs, like torchvision's, so the sampled columns are rebuilt in backward instead
of held between forward and backward.

Sampling positions follow torchvision exactly: output pixel ``(i, j)``, kernel tap ``(u, v)`` of
deformable group ``g`` reads the input at ``(i - ph + u + dy, j - pw + v + dx)``, with ``dy, dx``
at offset channels ``g * 2K + 2k`` and ``+ 1`` (``k = u * kw + v``, ``K = kh * kw``) and the mask
at channel ``g * K + k``; bilinear, zero outside the image.
"""
from __future__ import annotations

import torch
import torchvision
from einops import rearrange
from torch import Tensor

# grid_sampler_2d's integer codes: bilinear interpolation, zero padding.
_BILINEAR, _ZEROS = 0, 0


def _sampling_grid(offset: Tensor, kh: int, kw: int) -> Tensor:
    """Offsets ``(B, 2 G K, H, W)`` -> ``grid_sample`` grid ``(B G, K H, W, 2)`` (x, y in [-1, 1]).

    ``align_corners=False`` normalisation, position ``p`` -> ``(2 p + 1) / size - 1``, which is
    defined for any size (the ``align_corners=True`` one divides by ``size - 1``). The grid is
    the undeformed taps' positions plus ``2 / size`` times the offsets, written into one buffer:
    at the sizes alignment runs it is as large as the offsets, and no other temporary is.
    """
    _, _, h, w = offset.shape
    k = kh * kw
    off = rearrange(offset, "b (g k yx) h w -> (b g) k h w yx", k=k, yx=2)
    ar = dict(dtype=offset.dtype, device=offset.device)
    tap_y, tap_x = torch.meshgrid(torch.arange(kh, **ar) - kh // 2, torch.arange(kw, **ar) - kw // 2, indexing="ij")
    row, col = torch.meshgrid(torch.arange(h, **ar), torch.arange(w, **ar), indexing="ij")
    taps = torch.stack(
        ((2 * (col + tap_x.reshape(k, 1, 1)) + 1) / w - 1, (2 * (row + tap_y.reshape(k, 1, 1)) + 1) / h - 1), dim=-1
    )  # (K, H, W, 2)
    grid = torch.empty(off.shape, **ar)
    torch.mul(off[..., 1], 2.0 / w, out=grid[..., 0])
    torch.mul(off[..., 0], 2.0 / h, out=grid[..., 1])
    return grid.add_(taps).flatten(1, 2)


def _samples(x: Tensor, grid: Tensor, groups: int) -> Tensor:
    """Bilinear samples ``(B G, Cin / G, K H, W)`` of ``x (B, Cin, H, W)`` at ``grid``."""
    x_groups = rearrange(x, "b (g c) h w -> (b g) c h w", g=groups)
    return torch.grid_sampler_2d(x_groups, grid, _BILINEAR, _ZEROS, False)


def _check(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor) -> tuple[int, int]:
    """Validate the shapes (ValueError naming expected and actual); return (groups, kh * kw)."""
    b, c_in, h, w = x.shape
    c_out, c_w, kh, kw = weight.shape
    if c_w != c_in or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(
            f"modulated_deform_conv2d's CPU path needs a weight (Cout, {c_in}, odd kh, odd kw) for an input with "
            f"{c_in} channels, got weight shape {tuple(weight.shape)}"
        )
    k = kh * kw
    n_offsets = offset.shape[1]
    if not n_offsets or n_offsets % (2 * k) or offset.shape[0] != b or tuple(offset.shape[2:]) != (h, w):
        raise ValueError(f"offset must be (B={b}, 2 * groups * {k}, {h}, {w}), got {tuple(offset.shape)}")
    groups = n_offsets // (2 * k)
    if c_in % groups or tuple(mask.shape) != (b, groups * k, h, w):
        raise ValueError(
            f"with {groups} deformable groups, input channels ({c_in}) must divide by the groups and mask be "
            f"{(b, groups * k, h, w)}, got mask {tuple(mask.shape)}"
        )
    return groups, k


@torch.library.custom_op("vrt_spike::modulated_deform_conv2d_cpu", mutates_args=(), device_types="cpu")
def _deform_conv2d_cpu(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    groups, k = _check(x, offset, mask, weight)
    if tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must be ({weight.shape[0]},) for weight {tuple(weight.shape)}, got {tuple(bias.shape)}")
    kh, kw = weight.shape[2:]
    samples = _samples(x, _sampling_grid(offset, kh, kw), groups)
    # modulate in place: backward rebuilds the samples, so this buffer is the only one
    columns = rearrange(samples, "(b g) c (k h) w -> b g c k h w", g=groups, k=k)
    columns.mul_(rearrange(mask, "b (g k) h w -> b g 1 k h w", g=groups))
    out = torch.matmul(weight.flatten(1), columns.flatten(1, 3).flatten(2))  # (B, Cout, H W)
    return (out + bias[:, None]).view(x.shape[0], -1, *x.shape[2:])


@_deform_conv2d_cpu.register_fake
def _(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[0], x.shape[2], x.shape[3])


@torch.library.custom_op(
    "vrt_spike::modulated_deform_conv2d_cpu_backward", mutates_args=(), device_types="cpu"
)
def _deform_conv2d_cpu_backward(
    grad: Tensor, x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`_deform_conv2d_cpu` for ``(x, offset, mask, weight, bias)``."""
    groups, k = _check(x, offset, mask, weight)
    kh, kw = weight.shape[2:]
    h, w = x.shape[2:]
    grid = _sampling_grid(offset, kh, kw)
    samples = rearrange(_samples(x, grid, groups), "(b g) c (k h) w -> b g c k h w", g=groups, k=k)
    mask6 = rearrange(mask, "b (g k) h w -> b g 1 k h w", g=groups)
    grad_flat = grad.flatten(2)  # (B, Cout, H W)
    columns = (samples * mask6).flatten(1, 3).flatten(2)  # (B, Cin K, H W)
    grad_weight = torch.einsum("bop,bqp->oq", grad_flat, columns).view_as(weight)
    del columns  # at most three sample-sized buffers at a time
    grad_columns = torch.matmul(weight.flatten(1).t(), grad_flat).view_as(samples)
    grad_mask = rearrange((grad_columns * samples).sum(2), "b g k h w -> b (g k) h w")
    grad_samples = rearrange(grad_columns.mul_(mask6), "b g c k h w -> (b g) c (k h) w")
    x_groups = rearrange(x, "b (g c) h w -> (b g) c h w", g=groups)
    grad_x, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
        grad_samples, x_groups, grid, _BILINEAR, _ZEROS, False, [True, True]
    )
    # grid = (2 p + 1) / size - 1 per axis, so d grid / d p = 2 / size; offsets are (dy, dx).
    grad_grid = grad_grid * grid.new_tensor([2.0 / w, 2.0 / h])
    grad_offset = rearrange(
        grad_grid.flip(-1), "(b g) (k h) w yx -> b (g k yx) h w", g=groups, k=k, h=h
    )
    grad_x = rearrange(grad_x, "(b g) c h w -> b (g c) h w", g=groups)
    return grad_x, grad_offset.contiguous(), grad_mask, grad_weight, grad.sum((0, 2, 3))


@_deform_conv2d_cpu_backward.register_fake
def _(grad: Tensor, x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor) -> tuple[Tensor, ...]:
    return (
        torch.empty_like(x), torch.empty_like(offset), torch.empty_like(mask), torch.empty_like(weight),
        weight.new_empty(weight.shape[0]),
    )


def _setup_context(ctx, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    x, offset, mask, weight, _ = inputs
    ctx.save_for_backward(x, offset, mask, weight)


def _backward(ctx, grad: Tensor) -> tuple[Tensor, ...]:
    return _deform_conv2d_cpu_backward(grad.contiguous(), *ctx.saved_tensors)


_deform_conv2d_cpu.register_autograd(_backward, setup_context=_setup_context)


def modulated_deform_conv2d(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """DCNv2 with stride 1, dilation 1 and "same" padding (``kh // 2``, ``kw // 2``).

    ``x (B, Cin, H, W)``, ``offset (B, 2 G kh kw, H, W)``, ``mask (B, G kh kw, H, W)`` (already in
    [0, 1]), ``weight (Cout, Cin, kh, kw)``, ``bias (Cout,)`` -> ``(B, Cout, H, W)``; ``G``
    deformable groups. Equal to ``torchvision.ops.deform_conv2d`` (see the module docstring).
    """
    if x.device.type == "cpu":
        return _deform_conv2d_cpu(x, offset, mask, weight, bias)
    kh, kw = weight.shape[2:]
    return torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=(kh // 2, kw // 2), mask=mask)
