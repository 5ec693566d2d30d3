"""Peak CPU allocation of SpikeTemporalSA as max_batch_tokens shrinks (profiler memory events).

    python -m vrt_spike.bench.spike_memory

One scale-1 feature map (1, 32, 8, 48, 48) (2.4 MB); peaks are in multiples of its size.
"""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from vrt_spike.models.spike import SpikeTemporalSA


def peak_allocated_bytes(fn) -> int:
    """Running sum of the CPU allocator's (+alloc / -free) events, in time order: its maximum."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def main() -> None:
    torch.set_num_threads(2)
    x = torch.randn(1, 32, 8, 48, 48)
    feat = x.numel() * x.element_size()
    feats = [x, x[..., :2, :2], x[..., :1, :1], x[..., :1, :1]]
    print("max_batch_tokens   chunk   inference peak   (x feature map)")
    for tokens in (None, 8 * 48 * 48 // 4, 8 * 16 * 16, 8 * 4 * 4):
        sa = SpikeTemporalSA([32] * 4, heads=4, chunk_size=64, max_batch_tokens=tokens or 1, adaptive_chunk=tokens is not None)
        with torch.no_grad():
            peak = peak_allocated_bytes(lambda: sa(feats))
        side = "48x48" if tokens is None else f"{int((tokens // 8) ** 0.5)}x{int((tokens // 8) ** 0.5)}"
        print(f"{str(tokens or 'off'):>16}   {side:>5}   {peak / 2**20:8.2f} MiB   {peak / feat:5.2f}")
    print("training (forward + backward), chunk 8x8:")
    for ckpt in (False, True):
        y = x.clone().requires_grad_()
        sa = SpikeTemporalSA([32] * 4, heads=4, chunk_size=8, max_batch_tokens=8 * 8 * 8, use_checkpoint=ckpt)
        peak = peak_allocated_bytes(lambda: sum(f.sum() for f in sa([y, y[..., :2, :2], y[..., :1, :1], y[..., :1, :1]])).backward())
        print(f"  use_checkpoint={ckpt!s:5}  {peak / 2**20:8.2f} MiB   {peak / feat:5.2f}")


if __name__ == "__main__":
    main()
