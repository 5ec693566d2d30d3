"""The one clock of the package: every duration vrt_spike measures is taken here.

- :func:`now_s`: the host's monotonic clock (``time.perf_counter``), for work the host does itself
  (loading a sample, planning memory, a whole prediction, a warm-up);
- :class:`Laps`: consecutive stages on that clock (the Dataset's per-sample loading stages);
- :class:`DeviceClock`: marks on a device's timeline, for work a GPU runs asynchronously: a
  ``torch.cuda.Event`` recorded on the current stream (resolved after the work, with one
  synchronisation, never inside a step), or the host clock on a CPU (the StageTimer's spans);
- :func:`time_callable`: a callable's time per call over a loop on that device clock (inference
  forwards, optimizer steps);
- :class:`Spread`: the median and 10th / 90th percentiles of a sample of times.

Imports torch only: the data loaders, the timer, the bench and predict all use it.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["now_s", "Laps", "DeviceClock", "synchronize", "time_callable", "Spread"]


def now_s() -> float:
    """Seconds on the host's monotonic clock (only differences mean anything)."""
    return time.perf_counter()


class Laps:
    """Consecutive stage durations in ms: ``laps.lap("read_png")`` records the time since the
    previous lap (or the start), ``total_ms()`` the time since the start."""

    def __init__(self) -> None:
        self._start = self._last = now_s()
        self.ms: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = now_s()
        self.ms[stage] = (now - self._last) * 1e3
        self._last = now

    def total_ms(self) -> float:
        return (now_s() - self._start) * 1e3


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeviceClock:
    """Marks on one device's timeline: ``mark()`` returns a token, ``resolve()`` waits once for the
    device, ``elapsed_ms(a, b)`` is the time from token ``a`` to token ``b``.

    CUDA: an event recorded on the device's current stream, so a mark measures when the GPU got
    there, not when the host queued the work; ``remark(token)`` records an existing event again (the
    last record wins). CPU: ``time.perf_counter_ns``.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter_ns()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def remark(self, token: Any) -> Any:
        """Move ``token`` to now (a new mark when ``token`` is None)."""
        if not self.cuda or token is None:
            return self.mark()
        token.record(torch.cuda.current_stream(self.device))
        return token

    def resolve(self) -> None:
        """The one host synchronisation before reading elapsed times."""
        synchronize(self.device)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        if not self.cuda:
            return (end - start) / 1e6
        return 0.0 if end is start else start.elapsed_time(end)


def time_callable(fn: Callable[[], Any], *, warmup: int, iters: int, device: torch.device) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``iters`` times timed; per-call times in ms on the
    device clock (one synchronisation after the loop, none inside it)."""
    if warmup < 0 or iters < 1:
        raise ValueError(f"need warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    for _ in range(warmup):
        fn()
    clock = DeviceClock(device)
    clock.resolve()
    marks = [clock.mark()]
    for _ in range(iters):
        fn()
        marks.append(clock.mark())
    clock.resolve()
    return [clock.elapsed_ms(a, b) for a, b in zip(marks, marks[1:])]


@dataclass(frozen=True)
class Spread:
    """Median and 10th/90th percentiles of a sample of times in milliseconds."""

    median: float
    p10: float
    p90: float
    n: int

    @classmethod
    def of(cls, values_ms: list[float]) -> Spread:
        if not values_ms:
            raise ValueError("Spread.of: no times (at least one timed call is needed)")
        p10, med, p90 = np.percentile(np.asarray(values_ms, dtype=np.float64), [10, 50, 90])
        return cls(median=float(med), p10=float(p10), p90=float(p90), n=len(values_ms))
