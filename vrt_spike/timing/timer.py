"""StageTimer: per-region step timings taken from outside a network through hooks.

Every measurement is a *span* ``[t0, t1]`` on the device clock (`vrt_spike.timing.clock.DeviceClock`:
``time.perf_counter_ns`` on CPU, and on CUDA a ``torch.cuda.Event`` recorded on the device's current
stream, resolved by ``collect()`` with one synchronisation, never inside a step). Spans come from

- forward pre/post hooks on the contract's named submodules (``forward``, ``forward.vrt.stage3``,
  ...); a module call while autograd is running backward is gradient-checkpoint recompute and
  becomes ``backward.recompute.<region>`` (region = the region enclosing the module) instead.
  Recompute of modules below the named regions is seen by process-wide module hooks that exist
  only while the ``backward`` region is open, so the forward pass pays nothing for them;
- ``region(name)`` blocks (``backward``, ``optimizer_step``, ``data`` ...);
- backward spans per region (``backward.vrt.stage3``): from the moment the gradient of the
  region's output is complete (tensor hook) to the moment its first input's gradient is complete
  -- or, when that input carries no gradient (rgb, spikes), to the last accumulation of the
  region's own parameters (re-recorded, the last one wins) -- and at least to the end of its
  sub-regions' backward;
- ``backward.ddp_sync`` under torch.distributed with more than one process: from the last
  parameter gradient of the network to the end of the ``backward`` region, i.e. the exposed wait
  for DDP's final all-reduce (the all-reduce that overlaps with backward is not separable here).

Attribution: at every instant the most recently started open span owns the time, and that time
is credited to its region and to every dotted ancestor. So a region's value is its own time plus
its descendants', never time of a region it merely encloses in time but is not the parent of by
name (``forward.fusion.stage2`` runs inside ``forward.vrt`` yet is not part of it), children never
sum to more than their parent, and a region missing as a span (``backward.recompute``) is the sum
of its children. ``step`` is the wall time between consecutive ``end_step()`` calls (the first
step starts at its first span).

Peak memory (CUDA only, `vrt_spike.timing.memory.PeakMemory`): the allocator's peak inside each
forward/``region`` span. The timer resets the allocator's peak statistics at every span start, so
``torch.cuda.max_memory_allocated`` read elsewhere covers only the time since; the ``step`` row
carries the step's true peak.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch
from torch import nn

from vrt_spike.timing.clock import DeviceClock
from vrt_spike.timing.memory import PeakMemory
from vrt_spike.timing.regions import Region, ancestors, enclosing_regions, find_regions, parent


class _Span:
    __slots__ = ("name", "t0", "t1", "peak", "order")

    def __init__(self, name: str, t0: Any, order: int) -> None:
        self.name = name
        self.t0 = t0
        self.t1: Any = None
        self.peak = 0
        self.order = order


class _StepRecord:
    __slots__ = ("step", "start", "end", "spans", "ddp_end", "peak")

    def __init__(self, step, start, end, spans, ddp_end, peak) -> None:
        self.step, self.start, self.end, self.spans = step, start, end, spans
        self.ddp_end, self.peak = ddp_end, peak


class _RegionBlock:
    """Context manager of ``StageTimer.region``; may also be entered/exited by hand."""

    __slots__ = ("timer", "name", "span")

    def __init__(self, timer: StageTimer, name: str) -> None:
        self.timer, self.name, self.span = timer, name, None

    def __enter__(self) -> _RegionBlock:
        self.span = self.timer._open(self.name)
        if self.name == "backward":
            self.timer._watch_recompute(True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer._close(self.span)
        if self.name == "backward":
            self.timer._watch_recompute(False)
            if self.timer._ddp:
                self.timer._ddp_end = self.span.t1


class _NullBlock:
    def __enter__(self) -> _NullBlock:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_NULL_BLOCK = _NullBlock()


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, torch.Tensor):
                yield v
    elif isinstance(value, dict):
        for v in value.values():
            if isinstance(v, torch.Tensor):
                yield v


def _in_backward() -> bool:
    return torch._C._current_graph_task_id() != -1


class StageTimer:
    """Per-region timings of training steps; see the module docstring for the semantics.

    >>> timer = StageTimer(torch.device("cpu"))
    >>> timer.attach(net)
    >>> with timer.region("backward"):
    ...     loss.backward()
    >>> timer.end_step()
    >>> rows = timer.collect()  # [(step, region, ms), ...]
    """

    def __init__(self, device: torch.device | str, enabled: bool = True, *,
                 track_memory: bool | None = None) -> None:
        self.device = torch.device(device)
        self.enabled = enabled
        cuda = self.device.type == "cuda"
        if track_memory and not cuda:
            raise ValueError(f"timing: track_memory=True needs a CUDA device, got {self.device}")
        self.track_memory = cuda if track_memory is None else bool(track_memory)
        self._clock = DeviceClock(self.device)
        self._memory = PeakMemory(self.device)
        self._handles: list[Any] = []
        self._hooked_params: set[int] = set()
        # Parameters owned by each region and by none of its sub-regions.
        self._direct_params: dict[str, list[nn.Parameter]] = {}
        self._param_hooked: set[str] = set()  # regions whose direct parameters end their span
        self._regions: list[Region] = []
        self._module_region: dict[int, Region] = {}
        self._global_handles: list[Any] = []
        self._attached = False
        self._ddp = False
        self._step = 0
        self._order = 0
        self._pending: list[_StepRecord] = []
        self._new_step()
        self._step_start: Any = None

    # ------------------------------------------------------------------ state
    def _new_step(self) -> None:
        self._spans: list[_Span] = []
        self._bwd: dict[str, _Span] = {}
        self._stack: list[_Span] = []  # open spans (peak memory, end_step check)
        self._rstack: list[_Span] = []  # spans opened by region module hooks
        self._gstack: list[_Span | None] = []  # spans opened by the recompute watch
        self._recompute_open = 0
        self._ddp_end: Any = None
        self._step_peak = 0

    @property
    def step(self) -> int:
        """Index of the step in progress (0-based count of ``end_step()`` calls)."""
        return self._step

    @property
    def regions(self) -> list[Region]:
        return list(self._regions)

    # ------------------------------------------------------------------ attach
    def attach(self, net: nn.Module) -> None:
        """Register hooks on the named regions of `net`; a disabled timer registers none."""
        if not self.enabled:
            return
        if self._attached:
            raise RuntimeError("timing: StageTimer.attach() called twice; detach() first")
        self._regions = find_regions(net)
        for region in self._regions:
            m = region.module
            self._handles.append(m.register_forward_pre_hook(partial(self._region_pre, region)))
            self._handles.append(
                m.register_forward_hook(partial(self._region_post, region), always_call=True))
        self._module_region = enclosing_regions(net, self._regions)
        seen: set[int] = set()
        for region in sorted(self._regions, key=lambda r: -len(r.path)):
            if region.suffix:
                params = [p for p in region.module.parameters() if id(p) not in seen]
                seen.update(id(p) for p in params)
                self._direct_params[region.backward_name] = params
        dist = torch.distributed
        self._ddp = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self._attached = True

    def _hook_params(self, name: str) -> None:
        """End `name`'s backward span at its direct parameters' gradient accumulation (for
        regions whose input carries no gradient; re-run at collect() for unfrozen ones)."""
        self._param_hooked.add(name)
        for p in self._direct_params.get(name, ()):
            if p.requires_grad and id(p) not in self._hooked_params:
                self._handles.append(p.register_post_accumulate_grad_hook(partial(self._touch_end, name)))
                self._hooked_params.add(id(p))

    def detach(self) -> None:
        """Remove every hook; keeps finished steps for a last ``collect()``."""
        self._watch_recompute(False)
        self._module_region = {}
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._hooked_params.clear()
        self._direct_params = {}
        self._param_hooked = set()
        self._regions = []
        self._attached = False

    # ------------------------------------------------------------------ spans
    def _mark(self) -> Any:
        token = self._clock.mark()
        if self._step_start is None:
            self._step_start = token
        return token

    def _open(self, name: str) -> _Span:
        span = _Span(name, self._mark(), self._order)
        self._order += 1
        if self.track_memory:
            now_peak = self._memory.read()
            for s in self._stack:
                if now_peak > s.peak:
                    s.peak = now_peak
            self._step_peak = max(self._step_peak, now_peak)
            self._memory.reset()
            span.peak = self._memory.level
        self._spans.append(span)
        self._stack.append(span)
        return span

    def _close(self, span: _Span | None) -> None:
        if span is None or span.t1 is not None:
            return
        span.t1 = self._clock.mark()
        # Pop `span` (normally the top; tolerate blocks closed out of order by hand).
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i] is span:
                del self._stack[i]
                break
        if self.track_memory:
            peak = max(span.peak, self._memory.read())
            span.peak = peak
            self._step_peak = max(self._step_peak, peak)
            for s in self._stack:
                if peak > s.peak:
                    s.peak = peak

    def region(self, name: str) -> _RegionBlock | _NullBlock:
        """Time the enclosed block as region `name` (a dotted name, e.g. ``"backward"``)."""
        if not self.enabled:
            return _NULL_BLOCK
        if not isinstance(name, str) or not name or any(not part for part in name.split(".")):
            raise ValueError(f"timing: region name must be a dotted name like 'backward', got {name!r}")
        return _RegionBlock(self, name)

    # ------------------------------------------------------------------ hooks
    def _region_pre(self, region: Region, module: nn.Module, args: tuple) -> None:
        if _in_backward():  # checkpoint recompute, not forward
            self._recompute_open += 1
            self._rstack.append(self._open(region.recompute_name))
            return
        self._rstack.append(self._open(region.forward_name))
        if region.suffix and torch.is_grad_enabled():
            # The region's backward ends when its first input's gradient is complete; when that
            # input carries none (rgb, spikes), at its own parameters' last accumulation.
            name = region.backward_name
            hooked = False
            for t in _tensors(args[0]) if args else ():
                if t.requires_grad:
                    t.register_hook(partial(self._touch_end, name))
                    hooked = True
            if not hooked and name not in self._param_hooked:
                self._hook_params(name)

    def _region_post(self, region: Region, module: nn.Module, args: tuple, output: Any) -> None:
        if not self._rstack:  # attached while this module was running
            return
        span = self._rstack.pop()
        self._close(span)
        if span.name == region.recompute_name:
            self._recompute_open -= 1
            return
        if region.suffix and torch.is_grad_enabled():
            hook = partial(self._start_backward, region.backward_name)
            for t in _tensors(output):
                if t.requires_grad:
                    t.register_hook(hook)

    def _watch_recompute(self, on: bool) -> None:
        """Process-wide module hooks, only while ``backward`` runs: they see every module that
        checkpointing re-runs, below the named regions too."""
        if on and self._attached and not self._global_handles:
            self._global_handles = [
                nn.modules.module.register_module_forward_pre_hook(self._global_pre),
                nn.modules.module.register_module_forward_hook(self._global_post, always_call=True),
            ]
        elif not on:
            for handle in self._global_handles:
                handle.remove()
            self._global_handles = []

    def _global_pre(self, module: nn.Module, args: tuple) -> None:
        region = self._module_region.get(id(module))
        if region is not None and self._recompute_open == 0 and _in_backward():
            self._recompute_open += 1
            self._gstack.append(self._open(region.recompute_name))
        else:
            self._gstack.append(None)

    def _global_post(self, module: nn.Module, args: tuple, output: Any) -> None:
        span = self._gstack.pop() if self._gstack else None
        if span is not None:
            self._close(span)
            self._recompute_open -= 1

    def _start_backward(self, name: str, grad: torch.Tensor) -> None:
        if name not in self._bwd:
            span = _Span(name, self._mark(), self._order)
            span.peak = None  # not a nested span: no peak memory
            self._order += 1
            self._bwd[name] = span
            self._spans.append(span)

    def _touch_end(self, name: str, _tensor: torch.Tensor) -> None:
        span = self._bwd.get(name)
        if span is not None:
            span.t1 = self._clock.remark(span.t1)

    # ------------------------------------------------------------------ steps
    def end_step(self) -> None:
        """Close the step in progress: its wall time is the ``step`` region."""
        if not self.enabled:
            return
        open_names = [s.name for s in self._stack]
        if open_names:
            raise RuntimeError(f"timing: end_step() while regions are still open: {open_names}")
        end = self._clock.mark()
        start = end if self._step_start is None else self._step_start
        if self.track_memory:
            self._step_peak = max(self._step_peak, self._memory.read())
        self._pending.append(
            _StepRecord(self._step, start, end, self._spans, self._ddp_end, self._step_peak))
        self._step += 1
        self._new_step()
        self._step_start = end

    def start_step(self) -> None:
        """Start the step in progress now, unless a span already started it (a step after a gap,
        timed without any region inside: ``TimingCallback(breakdown=False)``)."""
        if self.enabled and self._step_start is None:
            self._step_start = self._clock.mark()

    def discard_step(self) -> None:
        """Forget everything recorded since the last ``end_step()`` (open regions included) and
        start the next step at its first span; for gaps that are not training (validation,
        epoch boundaries)."""
        if not self.enabled:
            return
        self._new_step()
        self._step_start = None

    def collect(self, with_memory: bool = False) -> list[tuple]:
        """Resolve finished steps: ``[(step, region, ms), ...]`` sorted by step and region.

        One host synchronisation on CUDA. With ``with_memory`` each row also carries the
        region's peak allocated memory in MiB (None where not measured).
        """
        if not self.enabled or not self._pending:
            return []
        if self._attached:
            for name in list(self._param_hooked):
                self._hook_params(name)
        self._clock.resolve()
        rows: list[tuple] = []
        for record in self._pending:
            ms, peaks = self._resolve(record)
            for name in sorted(ms):
                if with_memory:
                    peak = peaks.get(name)
                    rows.append((record.step, name, ms[name], None if peak is None else peak / 2**20))
                else:
                    rows.append((record.step, name, ms[name]))
        self._pending = []
        return rows

    def _resolve(self, rec: _StepRecord) -> tuple[dict[str, float], dict[str, int]]:
        off = partial(self._clock.elapsed_ms, rec.start)
        intervals: list[tuple[str, float, float, int]] = []
        peaks: dict[str, int] = {}
        bwd: dict[str, list] = {}  # per-region backward spans: name -> [t0, t1, order]
        for s in rec.spans:
            t0 = off(s.t0)
            if s.peak is None:
                bwd[s.name] = [t0, t0 if s.t1 is None else max(off(s.t1), t0), s.order]
                continue
            intervals.append((s.name, t0, max(off(s.t1), t0), s.order))
            if self.track_memory:  # forward, region() and recompute spans
                peaks[s.name] = max(peaks.get(s.name, 0), s.peak)
        # A region's backward lasts at least until its sub-regions' backward ends.
        for name in sorted(bwd, key=lambda n: -n.count(".")):
            par = parent(name)
            if par in bwd and bwd[name][1] > bwd[par][1]:
                bwd[par][1] = bwd[name][1]
        intervals += [(name, t0, t1, order) for name, (t0, t1, order) in bwd.items()]
        if rec.ddp_end is not None and bwd:
            last_grad = max(v[1] for n, v in bwd.items() if n.count(".") == 1)
            end = off(rec.ddp_end)
            intervals.append(("backward.ddp_sync", min(last_grad, end), end, self._order))
        ms = _attribute(intervals)
        ms["step"] = off(rec.end)
        if self.track_memory:
            peaks["step"] = rec.peak
        return ms, peaks


def _attribute(intervals: list[tuple[str, float, float, int]]) -> dict[str, float]:
    """Credit each instant to the latest-started open span and all its dotted ancestors."""
    owned: dict[str, float] = {name: 0.0 for name, *_ in intervals}
    events: list[tuple[float, int, int]] = []
    for i, (_, t0, t1, _) in enumerate(intervals):
        events.append((t0, 1, i))
        events.append((t1, 0, i))
    events.sort()
    active: list[tuple[float, int, int]] = []  # heap of (-t0, -order, index)
    ended: set[int] = set()
    prev = events[0][0] if events else 0.0
    for t, kind, i in events:
        if t > prev:
            while active and active[0][2] in ended:
                heapq.heappop(active)
            if active:
                owned[intervals[active[0][2]][0]] += t - prev
            prev = t
        if kind == 1:
            _, t0, _, order = intervals[i]
            heapq.heappush(active, (-t0, -order, i))
        else:
            ended.add(i)
    credit: dict[str, float] = {}
    for name, ms in owned.items():
        for anc in ancestors(name):
            credit[anc] = credit.get(anc, 0.0) + ms
    return credit
