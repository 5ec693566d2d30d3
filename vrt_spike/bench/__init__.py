"""Benchmarking and profiling, in one place. What each module measures, and how to run it:

- `run` (`python -m vrt_spike.bench`, `__main__`): one configuration's training and inference row
  (step time, samples/s, peak memory, FLOPs/MFU, per-stage times). The training figures are
  train.py's own step: `vrt_spike.lit.training.train` on the composed config with `step_measure`'s fixed
  on-device batch and step clock.
- `step_measure`: `FixedBatchDataModule`, `StepClock`, `fixed_batch_config`: train.py's step
  measured without data loading (used by `run` and `gpu_ladder`).
- `gpu_ladder` (`python -m vrt_spike.bench.gpu_ladder`, `benchmarks/gpu_ladder.sh` on a GPU box):
  the training-speed ladder, rung by rung, through the same measured fit.
- building blocks: `flops` (FlopCounterMode plus the formulas it lacks), `peaks` (dense peak per
  GPU and compute type, MFU), `measure` (timing loops, peak memory), `results` (the row schema,
  CSV/JSONL appends), `report` (tables), `optimizer` (optimizer-state memory and step time),
  `host_syncs` (host reads of tensor values per step; `python -m vrt_spike.bench.host_syncs`).
- studies, each `python -m vrt_spike.bench.<name> --help`: `vrt_attention` (VRT attention kernels
  against the official implementation), `deform_conv` (deformable-conv implementations),
  `compile_cost`, `data_loader`, `spike_memory`, `timing_overhead`, `spikes_help` (does the spike
  branch help: train.py and evaluate.py runs).

Importing the package imports none of them.
"""
