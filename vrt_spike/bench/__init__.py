"""Benchmarking, the product a user runs: one harness, one row schema, one table.

- `run` (`python -m vrt_spike.bench`, `__main__`): one configuration's measured fit, fed by Hydra
  overrides (`conf/bench.yaml` = `conf/train.yaml` + `bench.*`): train.py's own step through
  `vrt_spike.lit.training.train` on `step_measure`'s fixed on-device batch; step times from the
  shipped timing callback; one row of `results.FIELDS`; a multirun ends with `report`'s comparison.
- `gpu_ladder` (`python -m vrt_spike.bench.gpu_ladder`, `benchmarks/gpu_ladder.sh` on a GPU box):
  the training-speed ladder, a plan of override sets, each rung one run of the harness.
- `memory` (`python -m vrt_spike.bench.memory`): will a training config fit, planned on the CPU.
- building blocks: `step_measure` (`FixedBatchDataModule`, `StepProbe`, `fixed_batch_config`),
  `flops` (FlopCounterMode plus the formulas it lacks), `peaks` (dense peak per GPU and compute
  type, MFU), `results` (the row schema, CSV/JSONL appends), `report` (the tables), `optimizer`
  (optimizer-state memory and step time, `bench.optimizer_figures=true`).

Clock and peak memory are `vrt_spike.timing.clock` and `vrt_spike.timing.memory`; tables are written
by `vrt_spike.tables`. The one-off studies are scripts in `benchmarks/` (`vrt_attention.py`,
`deform_conv.py`, `data_loader.py`, `memory_*.py`) that import the package. Importing this package
imports none of its modules.
"""
