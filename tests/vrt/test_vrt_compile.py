"""``torch.compile`` (``model.compile=true``) captures VRT whole and computes the same function."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend

from vrt_spike.models.vrt import VRT

from .conftest import TINY_KWARGS, randomize_


@pytest.mark.slow
def test_compiled_training_step_is_one_graph_and_matches_eager() -> None:
    """Checkpointed blocks included: one graph, no break (module state changed mid-forward, a
    per-call index cache, used to split it into 30 graphs; a finite-input check into 2)."""
    vrt = randomize_(VRT(**TINY_KWARGS, use_checkpoint_attn=True, use_checkpoint_ffn=True)).train()
    x = torch.rand(1, 3, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    graphs = []

    def counting_aot_eager(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)  # AOT autograd traces forward and backward; runs them eagerly
        return lookup_backend("aot_eager")(gm, example_inputs)

    results = []  # compiled first: the first call of a fresh model is where per-call caches would fill
    for model in (torch.compile(vrt, backend=counting_aot_eager), vrt):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = model(x)
            (out - x).abs().mean().backward()
        # the shape caches step aside while Dynamo traces: no "lru_cache-wrapped function" warning
        assert not [w for w in caught if "lru_cache" in str(w.message)]
        results.append((out.detach(), {n: p.grad for n, p in vrt.named_parameters()}))
        vrt.zero_grad(set_to_none=True)
    (compiled_out, compiled_grads), (eager_out, eager_grads) = results

    assert len(graphs) == 1
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-5, atol=1e-5)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-4 * grad.abs().max().item(),
                                   msg=lambda m, name=name: f"{name}: {m}")
