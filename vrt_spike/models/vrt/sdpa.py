"""Scaled dot-product attention for VRT's windows: head-dim padding for the fused kernels, and a
CPU flash attention whose additive mask (the learned relative-position bias) gets a gradient.

Kept apart from the window geometry of :mod:`vrt_spike.models.vrt.attention`: these are kernels
(an autograd function with its own backward), as :mod:`vrt_spike.models.vrt.deform_conv` is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CpuFlashAttentionWithMaskGrad", "padded_sdpa"]


class CpuFlashAttentionWithMaskGrad(torch.autograd.Function):
    """CPU flash attention whose additive ``attn_mask`` gets a gradient, without an N x N activation.

    PyTorch's CPU flash kernel takes an ``attn_mask`` but cannot differentiate it, so SDPA falls
    back to its math path whenever the mask needs a gradient (VRT's learned relative-position
    bias) and keeps every ``(B, heads, N, N)`` softmax for backward: 3.2 of the 11.4 GB a GoPro
    training step held on CPU. Here the forward is the flash kernel (it keeps only the output and
    the row log-sum-exp) and the backward recomputes the probabilities from them, the standard
    flash-attention backward, which also yields the mask gradient::

        P = exp(scale q k^T + mask - lse)        dV = P^T dO
        dS = P * (dO V^T - rowsum(dO * O))       dQ = scale dS K,  dK = scale dS^T Q
        dmask = dS summed over the dims the mask was broadcast along

    ``q, k, v``: ``(B, heads, N, d)``; ``mask``: broadcastable to ``(B, heads, N, N)``.
    The backward holds one call's ``(B, heads, N, N)`` temporaries at a time, in ``float32`` at
    least (the kernel's log-sum-exp is ``float32`` for every input dtype).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=mask, scale=scale)
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, mask, out, lse = ctx.saved_tensors  # read once: checkpointing unpacks each tensor once
        dtypes = (q.dtype, k.dtype, v.dtype, mask.dtype)
        dtype = torch.promote_types(q.dtype, torch.float32)
        q, k, v, mask, out, grad_out = (t.to(dtype) for t in (q, k, v, mask, out, grad_out))
        probs = (q @ k.transpose(-2, -1)).mul_(ctx.scale).add_(mask).sub_(lse.unsqueeze(-1)).exp_()
        grad_v = probs.transpose(-2, -1) @ grad_out
        delta = (grad_out * out).sum(-1, keepdim=True)
        grad_scores = (grad_out @ v.transpose(-2, -1)).sub_(delta).mul_(probs)
        del probs
        grad_mask = grad_scores.sum_to_size(mask.shape) if ctx.needs_input_grad[3] else None
        grad_q = (grad_scores @ k).mul_(ctx.scale)
        grad_k = (grad_scores.transpose(-2, -1) @ q).mul_(ctx.scale)
        grads = (grad_q, grad_k, grad_v, grad_mask)
        return (*(None if g is None else g.to(d) for g, d in zip(grads, dtypes)), None)


def padded_sdpa(
    q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, scale: float, head_dim_multiple: int | None
) -> Tensor:
    """SDPA that zero-pads the head dim to ``head_dim_multiple`` (fused fp16/bf16 kernels need %8).

    Zero columns add nothing to ``q @ k^T`` and the padded value columns are cut off again, so the
    result equals the unpadded one; ``scale`` stays ``1/sqrt(true head dim)``. On CPU a mask that
    needs a gradient goes through :class:`CpuFlashAttentionWithMaskGrad` (CUDA's fused
    memory-efficient kernel differentiates the mask itself).
    """
    head_dim = q.shape[-1]
    pad = 0 if not head_dim_multiple else (-head_dim) % head_dim_multiple
    if pad:
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
    if attn_mask is not None and attn_mask.requires_grad and q.device.type == "cpu" and torch.is_grad_enabled():
        out = CpuFlashAttentionWithMaskGrad.apply(q, k, v, attn_mask, scale)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    return out[..., :head_dim] if pad else out
