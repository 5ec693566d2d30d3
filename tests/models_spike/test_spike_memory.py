"""SpikeTemporalSA peak CPU allocation shrinks with max_batch_tokens (profiler memory events)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from vrt_spike.models.spike import SpikeTemporalSA


def peak_allocated_bytes(fn: Callable[[], object]) -> int:
    """Peak of live CPU tensor bytes allocated while ``fn`` runs, above the level at its start.

    The profiler records every CPU allocator allocation (+bytes) and free (-bytes) as a
    ``[memory]`` event; their running sum in time order is the live allocation.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    assert events, "profiler recorded no memory events"
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def test_peak_memory_bounded_by_max_batch_tokens() -> None:
    channels, frames, side = 32, 8, 48
    x = torch.randn(1, channels, frames, side, side)
    feat_bytes = x.numel() * x.element_size()  # 2.4 MB
    feats = [x, x[..., :2, :2], x[..., :1, :1], x[..., :1, :1]]

    peaks = {}
    for tokens in (None, 8 * 48 * 48 // 4, 8 * 16 * 16, 8 * 4 * 4):
        sa = SpikeTemporalSA([channels] * 4, heads=4, mlp_ratio=2.0, chunk_size=64,
                             max_batch_tokens=tokens or 1, adaptive_chunk=tokens is not None)
        with torch.no_grad():
            peaks[tokens] = peak_allocated_bytes(lambda: sa(feats))

    unchunked, quarter, tile16, tile4 = peaks.values()
    # Unchunked holds q, k, v, attention output, MLP hidden (2C) ... for every pixel at once.
    assert unchunked > 5 * feat_bytes
    assert unchunked > quarter > tile16 > tile4
    # Small chunks: the output map plus chunk-sized temporaries only.
    assert tile4 < 1.2 * feat_bytes
    assert tile16 < 2.0 * feat_bytes


def test_checkpointed_training_memory_bounded_by_chunks() -> None:
    """With per-chunk checkpointing the backward graph keeps chunk inputs, not chunk activations."""
    x = torch.randn(1, 32, 8, 32, 32, requires_grad=True)
    feats = [x, x[..., :2, :2], x[..., :1, :1], x[..., :1, :1]]
    feat_bytes = x.numel() * x.element_size()

    def step(sa: SpikeTemporalSA) -> None:
        sum(f.sum() for f in sa(feats)).backward()

    peaks = []
    for use_checkpoint in (False, True):
        sa = SpikeTemporalSA([32] * 4, heads=4, chunk_size=8, max_batch_tokens=8 * 8 * 8,
                             use_checkpoint=use_checkpoint)
        peaks.append(peak_allocated_bytes(lambda: step(sa)))
    plain, ckpt = peaks
    assert plain > 8 * feat_bytes
    assert ckpt < plain / 3
