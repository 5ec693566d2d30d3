"""The devices of a parallel sweep (``hydra/launcher=parallel``) and how a job's process takes one.

A device is a GPU (``cuda:<id>``, the id as ``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi`` names it) or a
share of the CPU cores (``cpu:<cores>``, e.g. ``cpu:0-7``). The launcher's worker processes claim
them through one lock file per device in ``<sweep dir>/.devices/``: a worker takes a free device
when it starts its first job and keeps it for every later job until it exits (the OS then frees the
lock, so a device is never lost to a crashed worker). Two jobs never share a device, and a device
whose job has finished serves the next job that its worker picks up.

Keeping a device for the worker's life is what makes GPU pinning work in reused worker processes:
CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when the process first touches CUDA, so a worker whose
device changed between jobs would keep its first GPU. Each job of a worker sets the same value
(Hydra's ``hydra.job.env_set``), and on a CPU every thread of the worker is bound to its cores.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["Device", "DevicePool", "parse_cores", "format_cores", "visible_cuda_ids"]

log = logging.getLogger(__name__)

_SPEC = re.compile(r"^(cuda|cpu):(.+)$")


def parse_cores(text: str) -> tuple[int, ...]:
    """``"0-3,8"`` -> ``(0, 1, 2, 3, 8)``."""
    cores: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()) or (hi and int(hi) < int(lo)):
            raise ValueError(f"cpu cores {text!r}: expected a list of cores and ranges such as 0-3,8")
        cores.update(range(int(lo), int(hi or lo) + 1))
    return tuple(sorted(cores))


def format_cores(cores: tuple[int, ...] | list[int]) -> str:
    """``(0, 1, 2, 3, 8)`` -> ``"0-3,8"``."""
    parts, start = [], None
    ordered = sorted(cores)
    for i, core in enumerate(ordered):
        if start is None:
            start = core
        if i + 1 == len(ordered) or ordered[i + 1] != core + 1:
            parts.append(str(start) if start == core else f"{start}-{core}")
            start = None
    return ",".join(parts)


def visible_cuda_ids() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (all of them when unset)."""
    import torch

    count = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(count)]
    return [d.strip() for d in env.split(",") if d.strip()][:count]


@dataclass(frozen=True)
class Device:
    """One device of the pool: ``kind`` is ``cuda`` or ``cpu``; ``ident`` the CUDA id or the core list."""

    kind: str
    ident: str

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.ident}"

    @property
    def cores(self) -> tuple[int, ...]:
        return parse_cores(self.ident) if self.kind == "cpu" else ()

    def hydra_overrides(self) -> list[str]:
        """Hydra overrides that place a job on this device (they are not task overrides)."""
        if self.kind == "cuda":
            return [f"++hydra.job.env_set.CUDA_VISIBLE_DEVICES={self.ident}"]
        return []

    def pin_process(self) -> None:
        """Bind every thread of this process to the device's cores and size torch's thread pool to them.

        All threads, not only the caller: the worker's OpenMP threads were started by an earlier
        job and would otherwise keep running on any core."""
        if self.kind != "cpu":
            return
        import torch

        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), self.cores)
            except ProcessLookupError:  # a thread that ended meanwhile
                pass
        torch.set_num_threads(len(self.cores))


# The device this process claimed, per lock directory, with the lock that holds it (kept while the
# process lives: the OS releases it when the process exits).
_CLAIMED: dict[Path, tuple[Device, FileLock]] = {}


@dataclass(frozen=True)
class DevicePool:
    """The devices one sweep's jobs run on (picklable: the launcher hands it to its workers)."""

    devices: tuple[Device, ...]
    lock_dir: Path
    n_jobs: int

    @classmethod
    def from_config(cls, devices: list[str] | None, n_jobs: int | None, lock_dir: Path) -> DevicePool:
        """``hydra.launcher.devices`` / ``hydra.launcher.n_jobs`` -> a pool (checked: distinct devices that exist,
        at most one job per device)."""
        if n_jobs is not None and (not isinstance(n_jobs, int) or n_jobs < 1):
            raise ValueError(f"hydra.launcher.n_jobs: expected a number of jobs >= 1 or null (one per device), got {n_jobs!r}")
        parsed = _default_devices(n_jobs) if devices is None else [_parse(spec) for spec in devices]
        if not parsed:
            raise ValueError("hydra.launcher.devices: expected at least one device, got an empty list")
        _check_distinct(parsed)
        if n_jobs is not None and n_jobs > len(parsed):
            raise ValueError(f"hydra.launcher.n_jobs={n_jobs} exceeds the {len(parsed)} devices "
                             f"{[d.spec for d in parsed]}: two jobs would share a device; give at most "
                             f"{len(parsed)} jobs or more devices (hydra.launcher.devices)")
        return cls(tuple(parsed), Path(lock_dir), n_jobs or len(parsed))

    def claim(self, poll_s: float = 0.2) -> Device:
        """This process's device: the one it already holds, or the first free one (waiting for one)."""
        held = _CLAIMED.get(self.lock_dir)
        if held is not None:
            return held[0]
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        waited = False
        while True:
            for device in self.devices:
                lock = FileLock(self.lock_dir / f"{device.spec.replace(':', '_')}.lock")
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                _CLAIMED[self.lock_dir] = (device, lock)
                log.info("worker %d takes device %s", os.getpid(), device.spec)
                return device
            if not waited:
                log.info("worker %d waits for a free device of %s", os.getpid(), [d.spec for d in self.devices])
                waited = True
            time.sleep(poll_s)


def _parse(spec: object) -> Device:
    match = _SPEC.match(str(spec).strip())
    if match is None:
        raise ValueError(f"hydra.launcher.devices: expected devices such as cuda:0 or cpu:0-7, got {spec!r}")
    kind, ident = match.groups()
    if kind == "cpu":
        cores = parse_cores(ident)
        allowed = os.sched_getaffinity(0)
        if not set(cores) <= allowed:
            raise ValueError(f"hydra.launcher.devices: {spec} names cores {format_cores(sorted(set(cores) - allowed))} "
                             f"that this process may not use (allowed: {format_cores(sorted(allowed))})")
        return Device("cpu", format_cores(cores))
    visible = visible_cuda_ids()
    if ident not in visible:
        raise ValueError(f"hydra.launcher.devices: {spec} is not a visible GPU (visible, as CUDA_VISIBLE_DEVICES "
                         f"names them: {visible or 'none'})")
    return Device("cuda", ident)


def _default_devices(n_jobs: int | None) -> list[Device]:
    """Every visible GPU; without one, the allowed CPU cores in ``n_jobs`` shares (one core per job by default)."""
    gpus = visible_cuda_ids()
    if gpus:
        return [Device("cuda", g) for g in gpus]
    cores = sorted(os.sched_getaffinity(0))
    shares = n_jobs or len(cores)
    if shares > len(cores):
        raise ValueError(f"hydra.launcher.n_jobs={n_jobs}: more CPU jobs than the {len(cores)} cores this process may "
                         f"use ({format_cores(cores)}); each job needs a core of its own")
    per, extra = divmod(len(cores), shares)
    out, start = [], 0
    for k in range(shares):
        size = per + (k < extra)
        out.append(Device("cpu", format_cores(cores[start:start + size])))
        start += size
    return out


def _check_distinct(devices: list[Device]) -> None:
    seen: dict[str, str] = {}
    for device in devices:
        units = [f"cuda:{device.ident}"] if device.kind == "cuda" else [f"core {c}" for c in device.cores]
        for unit in units:
            if unit in seen:
                raise ValueError(f"hydra.launcher.devices: {seen[unit]} and {device.spec} share {unit}; two jobs would "
                                 "share a device")
            seen[unit] = device.spec
