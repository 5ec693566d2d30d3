"""Test instrument: counting the places where the host waits for a tensor's value.

Every way Python reads one value of a tensor (``.item()``, ``bool(t)``, ``float(t)``, ``int(t)``,
a branch on a tensor) ends in ``aten::_local_scalar_dense``. On CUDA each of those is a device
sync that stalls the launch queue; on CPU it costs nothing, but it is the same line of code, so
counting it on CPU finds the syncs a GPU run would pay, without a GPU. Not seen on the CPU:
device-to-host copies (``.cpu()``, ``.tolist()``, ``.numpy()``), which are no-ops there;
``torch.cuda.set_sync_debug_mode("error")`` catches those on a GPU.

Host syncs per training step of a real fit through train.py's code, and where they come from, are
``tests/train/test_train_host_syncs.py`` (0 per step; a failure names the sites):

    pytest tests/train/test_train_host_syncs.py -m ''     # fp32 AdamW, and 8-bit AdamW in bf16
"""
from __future__ import annotations

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
