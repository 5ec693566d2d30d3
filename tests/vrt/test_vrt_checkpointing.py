"""Activation checkpointing: same outputs and gradients, recomputation where configured."""
from __future__ import annotations

import pytest
import torch

from vrt_spike.models.vrt import VRT
from vrt_spike.models.vrt.tmsa import TMSA, TMSAG


def _group(ckpt_attn: bool, ckpt_ffn: bool) -> TMSAG:
    torch.manual_seed(0)
    group = TMSAG(dim=12, depth=2, num_heads=3, window_size=(2, 4, 4), mut_attn=True, mlp_ratio=2.0, qkv_bias=True,
                  qk_scale=None, drop_path=0.0, norm_layer=torch.nn.LayerNorm, use_checkpoint_attn=ckpt_attn,
                  use_checkpoint_ffn=ckpt_ffn, attn_impl="sdpa")
    with torch.no_grad():
        for p in group.parameters():
            p.normal_(0, 0.3)
    return group


def _run(group: TMSAG, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, int]]:
    counts = {"attn": 0, "mlp": 0}
    hooks = [group.blocks[1].attn.register_forward_pre_hook(lambda *a: counts.__setitem__("attn", counts["attn"] + 1)),
             group.blocks[1].mlp.register_forward_pre_hook(lambda *a: counts.__setitem__("mlp", counts["mlp"] + 1))]
    xi = x.clone().requires_grad_(True)
    out = group(xi)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    for h in hooks:
        h.remove()
    return out.detach(), [xi.grad] + [p.grad for p in group.parameters()], counts


@pytest.mark.parametrize(("ckpt_attn", "ckpt_ffn"), [(True, False), (False, True), (True, True)])
def test_checkpointing_keeps_outputs_and_gradients(ckpt_attn: bool, ckpt_ffn: bool) -> None:
    x = torch.randn(2, 12, 3, 8, 12)
    ref_out, ref_grads, ref_counts = _run(_group(False, False), x)
    out, grads, counts = _run(_group(ckpt_attn, ckpt_ffn), x)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-7)
    # checkpointed parts run again during backward (pre-hooks: recomputation stops early, after the
    # last saved tensor, so post-hooks may not fire)
    assert ref_counts == {"attn": 1, "mlp": 1}
    assert counts == {"attn": 1 + ckpt_attn, "mlp": 1 + ckpt_ffn}


def test_no_recomputation_without_grad() -> None:
    group = _group(True, True)
    calls = []
    group.blocks[0].attn.register_forward_pre_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        group(torch.randn(1, 12, 2, 8, 8))
    assert calls == [1]


def test_checkpoint_flags_follow_official_rules(tiny_kwargs: dict) -> None:
    model = VRT(**tiny_kwargs, use_checkpoint_attn=True, use_checkpoint_ffn=True,
                no_checkpoint_attn_blocks=[1, 7], no_checkpoint_ffn_blocks=[2])

    def flags(module: torch.nn.Module) -> set[tuple[bool, bool]]:
        return {(b.use_checkpoint_attn, b.use_checkpoint_ffn) for b in module.modules() if isinstance(b, TMSA)}

    assert flags(model.stage1) == {(True, True)}
    assert flags(model.stage2.residual_group1) == {(False, True)}
    assert flags(model.stage2.residual_group2) == {(True, True)}  # upstream always checkpoints this group's attention
    assert flags(model.stage3.residual_group1) == {(True, False)}
    assert flags(model.stage8[1]) == {(False, True)}  # layer 7 = first RTMSA
    assert flags(model.stage8[2]) == {(True, True)}


def test_alignment_checkpointing_keeps_outputs_and_gradients_and_recomputes_each_call(tiny_kwargs: dict) -> None:
    from tests.vrt.conftest import randomize_

    x = torch.rand(1, 2, 3, 40, 40)

    def run(align: bool) -> tuple[torch.Tensor, list[torch.Tensor], int]:
        torch.manual_seed(0)
        model = randomize_(VRT(**tiny_kwargs, use_checkpoint_align=align))
        calls = []
        model.stage1.pa_deform.register_forward_pre_hook(lambda *a: calls.append(1))
        out = model(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), [p.grad for p in model.parameters()], len(calls)

    ref_out, ref_grads, ref_calls = run(False)
    out, grads, calls = run(True)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    assert calls == 2 * ref_calls  # every alignment call of stage 1 runs again in backward
