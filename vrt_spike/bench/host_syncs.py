"""Counting the places where the host waits for a tensor's value.

Every way Python reads one value of a tensor (``.item()``, ``bool(t)``, ``float(t)``, ``int(t)``,
a branch on a tensor) ends in ``aten::_local_scalar_dense``. On CUDA each of those is a device
sync that stalls the launch queue; on CPU it costs nothing, but it is the same line of code, so
counting it on CPU finds the syncs a GPU run would pay, without a GPU. Not seen on the CPU:
device-to-host copies (``.cpu()``, ``.tolist()``, ``.numpy()``), which are no-ops there;
``torch.cuda.set_sync_debug_mode("error")`` catches those on a GPU.

Host syncs per training step of a real fit through train.py's code, and where they come from:

    python -m vrt_spike.bench.host_syncs                       # tiny preset, 8 steps, fp32 AdamW
    python -m vrt_spike.bench.host_syncs --steps 8 optim=adamw8bit trainer.precision=bf16-mixed
    python -m vrt_spike.bench.host_syncs model.compile=true    # the first steps compile (minutes on a CPU)

Counts ``aten::_local_scalar_dense`` in the main process between the start of the 2nd training
batch and the start of the last, with logging, timing and progress-bar intervals longer than the
fit (what they read at their interval is not part of a step). The embedded synthetic dataset
(``data/synthetic``; built when missing), one loader worker, validation off.
"""
from __future__ import annotations

import argparse
import tempfile
import traceback
from collections import Counter
from typing import Any

import torch
from lightning.pytorch import Callback
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter", "SyncsPerBatch"]

_SCALAR_READS = {torch.ops.aten._local_scalar_dense.default}


class HostSyncCounter(TorchDispatchMode):
    """A dispatch mode that counts ``aten::_local_scalar_dense`` calls (host reads of a value).

    ``with HostSyncCounter(stacks=True) as syncs: ...`` then ``syncs.count`` and, with ``stacks``,
    ``syncs.sites``: a Counter of the innermost frames (``file:line in function``) outside torch
    that asked for the value, for finding them.
    """

    def __init__(self, stacks: bool = False) -> None:
        super().__init__()
        self.count = 0
        self.stacks = stacks
        self.sites: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in _SCALAR_READS:
            self.count += 1
            if self.stacks:
                self.sites[_caller()] += 1
        return func(*args, **(kwargs or {}))


def _caller() -> str:
    """The innermost stack frame outside torch's own Python code (where the read was asked for)."""
    frames = traceback.extract_stack()[:-2]
    for frame in reversed(frames):
        path = frame.filename.replace("\\", "/")
        if "/torch/" not in path and "/torch_" not in path:
            return f"{path}:{frame.lineno} in {frame.name}"
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"


class SyncsPerBatch(Callback):
    """Counts host reads of tensor values (:class:`HostSyncCounter`) from the fit's start, noting
    the count at the start of every training batch: the difference between two starts is all that
    the steps in between read back (forward, backward, optimizer, Lightning's loop, logging,
    callbacks). Instances register in :attr:`runs` so a test finds the one Hydra built."""

    runs: list["SyncsPerBatch"] = []

    def __init__(self) -> None:
        self.counter = HostSyncCounter(stacks=True)
        self.at_start: list[int] = []
        self.sites_at_start: list[Counter] = []
        SyncsPerBatch.runs.append(self)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.counter.__enter__()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.at_start.append(self.counter.count)
        self.sites_at_start.append(Counter(self.counter.sites))

    def teardown(self, trainer, pl_module, stage) -> None:
        if stage == "fit":
            self.counter.__exit__(None, None, None)

    def per_step(self, first: int) -> tuple[float, Counter]:
        """Reads per step from batch ``first`` to the last batch's start, and where they came from."""
        steps = len(self.at_start) - 1 - first
        sites = self.sites_at_start[-1] - self.sites_at_start[first]
        return (self.at_start[-1] - self.at_start[first]) / steps, sites


def main() -> None:
    from hydra import compose, initialize_config_dir

    from vrt_spike import PROJECT_ROOT
    from vrt_spike.lit.training import train

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="training steps (>= 3)")
    p.add_argument("--first", type=int, default=1, help="count from this batch's start (later ones skip compile)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides of conf/train.yaml")
    args = p.parse_args()
    if args.steps < args.first + 2:
        p.error("--steps must leave at least two counted steps after --first")
    with tempfile.TemporaryDirectory() as out:
        overrides = ["model=tiny", "trainer=cpu", "logger=none", f"paths.output_dir={out}",
                     "data.clip_len=2", "data.crop_size=48", "data.batch_size=2", "data.num_workers=1",
                     f"trainer.max_steps={args.steps}", "trainer.limit_val_batches=0",
                     "trainer.log_every_n_steps=100000", "callbacks.timing.interval=100000",
                     "callbacks.timing.console=off", "callbacks.progress_bar.refresh_rate=100000",
                     "+callbacks.sync_probe._target_=vrt_spike.bench.host_syncs.SyncsPerBatch", *args.overrides]
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        SyncsPerBatch.runs.clear()
        train(cfg)
    (probe,) = SyncsPerBatch.runs
    per_step, sites = probe.per_step(first=args.first)
    counted = len(probe.at_start) - 1 - args.first
    print(f"\nhost syncs per training step: {per_step:g} (over {counted} steps; {probe.counter.count} in the whole "
          f"fit, setup and teardown included); overrides: {' '.join(args.overrides) or '(none)'}")
    for site, n in sites.most_common(10):
        print(f"  {n / counted:6.2f}/step  {site}")


if __name__ == "__main__":
    main()
