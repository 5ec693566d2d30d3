"""The CPU deformable convolution is torchvision's function: values, all five gradients, memory."""
from __future__ import annotations

import pytest
import torch
import torchvision

from vrt_spike.models.vrt.deform_conv import modulated_deform_conv2d

ARGS = ("x", "offset", "mask", "weight", "bias")


def _inputs(b, c_in, c_out, h, w, groups, k, dtype, offset_scale, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c_in, h, w, generator=gen, dtype=dtype)
    # offset_scale 3 sends many samples off the image (zero padding, partial corners)
    offset = torch.randn(b, 2 * groups * k * k, h, w, generator=gen, dtype=dtype) * offset_scale
    mask = torch.rand(b, groups * k * k, h, w, generator=gen, dtype=dtype)
    weight = torch.randn(c_out, c_in, k, k, generator=gen, dtype=dtype)
    bias = torch.randn(c_out, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (x, offset, mask, weight, bias)]


def _torchvision(x, offset, mask, weight, bias):
    k = weight.shape[-1]
    return torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=k // 2, mask=mask)


def _max_rel_errors(inputs) -> dict[str, float]:
    ours = modulated_deform_conv2d(*inputs)
    ref = _torchvision(*inputs)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=ref.dtype)
    ours_g = torch.autograd.grad(ours, inputs, grad)
    ref_g = torch.autograd.grad(ref, inputs, grad)
    errors = {"out": ((ours - ref).abs().max() / ref.abs().max()).item()}
    for name, a, b in zip(ARGS, ours_g, ref_g):
        errors[name] = ((a - b).abs().max() / b.abs().max()).item()
    return errors


@pytest.mark.parametrize(
    ("b", "c_in", "c_out", "h", "w", "groups", "k"),
    [
        (2, 12, 5, 7, 9, 3, 3),  # odd sizes, 3 deformable groups
        (1, 4, 4, 1, 6, 2, 3),  # one row: the align_corners=True normalisation would divide by 0
        (1, 4, 3, 5, 1, 1, 1),  # one column, 1x1 kernel
        (2, 8, 8, 6, 6, 4, 5),  # 5x5 kernel, padding 2
    ],
)
def test_equals_torchvision_in_float64(b, c_in, c_out, h, w, groups, k) -> None:
    errors = _max_rel_errors(_inputs(b, c_in, c_out, h, w, groups, k, torch.float64, offset_scale=3.0))
    assert max(errors.values()) < 1e-12, errors


@pytest.mark.parametrize("offset_scale", [0.0, 0.7, 3.0])  # integer positions, inside, partly outside
def test_equals_torchvision_in_float32_at_vrt_shapes(offset_scale: float) -> None:
    """VRT's alignment: 16 deformable groups, 3x3, channels in = out."""
    errors = _max_rel_errors(_inputs(2, 32, 32, 16, 16, 16, 3, torch.float32, offset_scale))
    assert max(errors.values()) < 2e-6, errors


def test_backward_keeps_only_the_inputs() -> None:
    """No sampled columns (9x the input) are held between forward and backward."""
    inputs = _inputs(2, 16, 16, 12, 12, 4, 3, torch.float32, offset_scale=1.0)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        modulated_deform_conv2d(*inputs)
    assert sorted(t.numel() for t in saved) == sorted(t.numel() for t in inputs[:4])
    assert all(any(s.data_ptr() == t.data_ptr() for t in inputs) for s in saved)


def test_nan_offsets_give_nan_outputs_at_those_pixels_only() -> None:
    x, offset, mask, weight, bias = (t.detach() for t in _inputs(1, 4, 3, 6, 6, 1, 3, torch.float32, 1.0))
    offset[0, 0, 2, 3] = float("nan")
    out = modulated_deform_conv2d(x, offset, mask, weight, bias)
    bad = ~torch.isfinite(out)
    assert bad[0, :, 2, 3].all() and int(bad.sum()) == 3


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        ({"weight": (3, 5, 3, 3)}, r"weight \(Cout, 4, odd kh, odd kw\) .* got weight shape \(3, 5, 3, 3\)"),
        ({"weight": (3, 4, 2, 2)}, r"odd kh, odd kw.*got weight shape \(3, 4, 2, 2\)"),
        ({"offset": (1, 17, 6, 6)}, r"offset must be \(B=1, 2 \* groups \* 9, 6, 6\), got \(1, 17, 6, 6\)"),
        ({"mask": (1, 18, 6, 6)}, r"mask be \(1, 9, 6, 6\), got mask \(1, 18, 6, 6\)"),
        ({"offset": (1, 0, 6, 6)}, r"offset must be .* got \(1, 0, 6, 6\)"),
        ({"bias": (4,)}, r"bias must be \(3,\) for weight \(3, 4, 3, 3\), got \(4,\)"),
    ],
)
def test_bad_shapes_raise_value_error(shapes: dict, match: str) -> None:
    args = dict(zip(ARGS, (t.detach() for t in _inputs(1, 4, 3, 6, 6, 1, 3, torch.float32, 1.0))))
    for name, shape in shapes.items():
        args[name] = torch.zeros(shape)
    with pytest.raises(ValueError, match=match):
        modulated_deform_conv2d(**args)


@pytest.mark.cuda
def test_cpu_op_equals_the_cuda_path() -> None:
    """The two devices run different implementations (ours on CPU, torchvision's on CUDA): a model
    trained on one and run on the other must see the same function and gradients."""
    cpu = _inputs(2, 32, 32, 24, 20, 16, 3, torch.float64, offset_scale=3.0)
    cuda = [t.detach().cuda().requires_grad_() for t in cpu]
    out_cpu, out_cuda = modulated_deform_conv2d(*cpu), modulated_deform_conv2d(*cuda)
    grad = torch.randn(out_cpu.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads_cpu = torch.autograd.grad(out_cpu, cpu, grad)
    grads_cuda = torch.autograd.grad(out_cuda, cuda, grad.cuda())
    for name, a, b in zip(("out", *ARGS), (out_cpu, *grads_cpu), (out_cuda, *grads_cuda)):
        assert ((a - b.cpu()).abs().max() / a.abs().max()).item() < 1e-10, name
