"""Measurement building blocks for `python -m vrt_spike.bench`: FLOPs, device peaks, timing loops,
result rows and comparison tables. Pure torch + stdlib; no Hydra, no Lightning."""
