"""FLOPs of one call, counted by `torch.utils.flop_counter.FlopCounterMode` plus the ops it misses.

`FlopCounterMode` counts matmuls, convolutions and the CUDA SDPA kernels by shape. Two op families
that VRT+Spike runs are missing from its registry, so they are added here through its
`custom_mapping` (no patching of torch):

- the deformable convolution of VRT's flow-guided DCN alignment: torchvision's
  (`torchvision::deform_conv2d` and its backward, on CUDA) and ours on CPU
  (`vrt_spike::modulated_deform_conv2d_cpu` and its backward, the same function). Both are counted
  analytically with the same formulas, see `deform_conv2d_flops`.
- the CPU SDPA kernel (`aten::_scaled_dot_product_flash_attention_for_cpu` and its backward), which
  `F.scaled_dot_product_attention` dispatches to on CPU. Counted with torch's own SDPA formulas, so
  CPU and GPU counts of the same model agree.

Conventions (those of `FlopCounterMode`): one multiply-add = 2 FLOPs; bias additions, norms,
activations, softmax and optimizer updates are not counted (they are a small fraction of the
matmul/conv work and memory-bound anyway).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision.*)
import vrt_spike.models.vrt.deform_conv  # noqa: F401  (registers torch.ops.vrt_spike.*)
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

# FLOPs per bilinearly sampled value in the forward pass: 4 neighbour reads weighted by the 4
# bilinear coefficients and summed (4 multiplies + 3 adds); +1 multiply by the modulation mask.
BILINEAR_SAMPLE_FLOPS = 7
MASK_FLOPS = 1
# Backward sampling work in units of the forward sampling work: the sampled columns are recomputed
# for the weight gradient (1x), the column gradient is scattered to the 4 input neighbours (1x) and
# the offset/mask gradients need the bilinear-weight derivatives at the same 4 neighbours (1x).
DEFORM_BACKWARD_SAMPLING_FACTOR = 3


@dataclass(frozen=True)
class DeformConvFlops:
    """Analytic FLOPs of one `deform_conv2d` call, split into its matmul and sampling parts."""

    matmul: int
    sampling: int

    @property
    def total(self) -> int:
        return self.matmul + self.sampling


def deform_conv2d_flops(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    out_shape: Sequence[int],
    use_mask: bool,
) -> DeformConvFlops:
    """Forward FLOPs of a (modulated) deformable convolution.

    input `(B, Cin, H, W)`, weight `(Cout, Cin/groups, kh, kw)`, output `(B, Cout, Ho, Wo)`.

    - matmul: every output element is a dot product over `Cin/groups * kh * kw` sampled values:
      `2 * B * Cout * Ho * Wo * (Cin/groups) * kh * kw` (equal to a dense conv of the same shapes).
    - sampling: every one of the `B * Cin * kh * kw * Ho * Wo` sampled values is a bilinear
      interpolation (`BILINEAR_SAMPLE_FLOPS`), times the mask when modulated (`MASK_FLOPS`).
    """
    b, c_in = int(input_shape[0]), int(input_shape[1])
    c_out, c_in_per_group, kh, kw = (int(s) for s in weight_shape)
    h_out, w_out = int(out_shape[2]), int(out_shape[3])
    matmul = 2 * b * c_out * h_out * w_out * c_in_per_group * kh * kw
    per_sample = BILINEAR_SAMPLE_FLOPS + (MASK_FLOPS if use_mask else 0)
    sampling = b * c_in * kh * kw * h_out * w_out * per_sample
    return DeformConvFlops(matmul=matmul, sampling=sampling)


def deform_conv2d_backward_flops(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    grad_shape: Sequence[int],
    use_mask: bool,
) -> DeformConvFlops:
    """Backward FLOPs of a deformable convolution (input, weight, offset and mask gradients).

    matmul: the column gradient `W^T @ grad` and the weight gradient `grad @ columns^T`, each as
    large as the forward matmul (2x, the same rule torch applies to dense convolutions). sampling:
    `DEFORM_BACKWARD_SAMPLING_FACTOR` times the forward sampling work.
    """
    fwd = deform_conv2d_flops(input_shape, weight_shape, grad_shape, use_mask)
    return DeformConvFlops(
        matmul=2 * fwd.matmul, sampling=DEFORM_BACKWARD_SAMPLING_FACTOR * fwd.sampling
    )


# The formulas below receive shapes for tensor arguments (FlopCounterMode's `shape_wrapper`).
def _deform_conv2d_formula(
    input_shape, weight_shape, offset_shape, mask_shape, bias_shape, *args, out_shape, **kwargs
) -> int:
    use_mask = bool(args[-1]) if args else bool(kwargs.get("use_mask", False))
    return deform_conv2d_flops(input_shape, weight_shape, out_shape, use_mask).total


def _deform_conv2d_backward_formula(
    grad_shape, input_shape, weight_shape, offset_shape, mask_shape, bias_shape, *args,
    out_shape, **kwargs,
) -> int:
    use_mask = bool(args[-1]) if args else bool(kwargs.get("use_mask", False))
    return deform_conv2d_backward_flops(input_shape, weight_shape, grad_shape, use_mask).total


def _cpu_deform_conv2d_formula(
    input_shape, offset_shape, mask_shape, weight_shape, bias_shape, *args, out_shape, **kwargs
) -> int:
    return deform_conv2d_flops(input_shape, weight_shape, out_shape, use_mask=True).total


def _cpu_deform_conv2d_backward_formula(
    grad_shape, input_shape, offset_shape, mask_shape, weight_shape, *args, out_shape, **kwargs
) -> int:
    return deform_conv2d_backward_flops(input_shape, weight_shape, grad_shape, use_mask=True).total


def _cpu_sdpa_formula(query_shape, key_shape, value_shape, *args, out_shape, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_formula(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape, **kwargs
) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def deform_conv_op_names() -> tuple[str, ...]:
    """`FlopCount.by_op` keys of the deformable convolution (forward and backward, both devices)."""
    ops = (torch.ops.torchvision.deform_conv2d, torch.ops.torchvision._deform_conv2d_backward,
           torch.ops.vrt_spike.modulated_deform_conv2d_cpu, torch.ops.vrt_spike.modulated_deform_conv2d_cpu_backward)
    return tuple(str(op) for op in ops)


def extra_flop_formulas() -> dict[Any, Callable[..., int]]:
    """The `custom_mapping` for `FlopCounterMode`: ops its registry misses (see module doc)."""
    aten = torch.ops.aten
    return {
        torch.ops.torchvision.deform_conv2d: _deform_conv2d_formula,
        torch.ops.torchvision._deform_conv2d_backward: _deform_conv2d_backward_formula,
        torch.ops.vrt_spike.modulated_deform_conv2d_cpu: _cpu_deform_conv2d_formula,
        torch.ops.vrt_spike.modulated_deform_conv2d_cpu_backward: _cpu_deform_conv2d_backward_formula,
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_formula,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_formula,
    }


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one counted call: the total, per op and per module (dotted module path)."""

    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    by_module: dict[str, int] = field(default_factory=dict)


def flop_counter_mode() -> FlopCounterMode:
    """A `FlopCounterMode` with `extra_flop_formulas`, silent; read it with `flop_count`."""
    return FlopCounterMode(display=False, custom_mapping=extra_flop_formulas())


def flop_count(counter: FlopCounterMode) -> FlopCount:
    """What `counter` counted: the total, per op and per module."""
    counts = counter.get_flop_counts()
    by_op = {str(op): int(n) for op, n in counts.get("Global", {}).items()}
    by_module = {
        name: int(sum(ops.values())) for name, ops in counts.items() if name != "Global"
    }
    return FlopCount(total=int(counter.get_total_flops()), by_op=by_op, by_module=by_module)


def count_flops(fn: Callable[[], Any]) -> FlopCount:
    """Run `fn()` once under `flop_counter_mode()` and return its FLOPs.

    The call really executes (on the tensors' device), so count a step that is affordable to run.
    """
    with flop_counter_mode() as counter:
        fn()
    return flop_count(counter)
