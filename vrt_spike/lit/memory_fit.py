"""Will it fit? A memory plan held against cards, the largest batch or crop that fits, the cheapest
lever for a config that does not, and train.py's pre-flight check.

    verdicts = card_verdicts(plan, cards_gib(48), reserve_gib=2.0)
    solution = solve(cfg, "batch", capacity_bytes=46 * GIB)
    check_before_fit(cfg, trainer)  # raises MemoryPlanError naming the cheapest lever

A card of ``N GB`` is taken as ``N`` GiB (an 80 GB H100 reports 79.6 GiB); ``memory.reserve_gb``
of it is kept out of the plan's reach for what the plan does not hold: the CUDA context and the
caching allocator's rounding and fragmentation.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vrt_spike.atomic import write_text_atomically
from vrt_spike.lit.config import apply_overrides, checkpointing_overrides
from vrt_spike.lit.memory_plan import GIB, StepPlan, plan_table, plan_training_step

__all__ = ["CARDS_GIB", "PLAN_FILE", "MemoryPlanError", "Lever", "Solution", "cards_gib", "card_verdicts",
           "verdict_lines", "solve", "levers_for", "cheapest_fit", "check_before_fit", "write_plan"]

log = logging.getLogger(__name__)

CARDS_GIB = (24, 48, 80, 141)  # RTX 4090, A6000 / L40S, A100 / H100, H200
PLAN_FILE = "memory_plan.json"
MAX_BATCH = 256                # the batch search stops here ("at least 256")
_CROP_STEP = 8                 # crops VRT takes: multiples of 8 (its 1/8-scale stage), see check_config


class MemoryPlanError(RuntimeError):
    """A training step that the plan says will not fit the device; the message names the cheapest lever."""


def cards_gib(device_gb: float | None) -> dict[str, float]:
    """The cards the verdict speaks of, plus ``memory.device_gb`` when it is another size."""
    cards = {f"{g} GB": float(g) for g in CARDS_GIB}
    if device_gb is not None and float(device_gb) not in cards.values():
        cards[f"{float(device_gb):g} GB (memory.device_gb)"] = float(device_gb)
    return cards


def card_verdicts(plan: StepPlan, cards: Mapping[str, float], reserve_gib: float) -> list[dict[str, Any]]:
    """Per card: its capacity, the headroom the plan leaves after ``reserve_gib``, and whether it fits."""
    rows = []
    for name, gib in cards.items():
        usable = (gib - reserve_gib) * GIB
        rows.append({"card": name, "capacity_bytes": int(gib * GIB), "headroom_bytes": int(usable - plan.peak_bytes),
                     "fits": bool(plan.peak_bytes <= usable)})
    return rows


def verdict_lines(verdicts: list[dict[str, Any]], reserve_gib: float) -> str:
    lines = [f"Fits? (each card less memory.reserve_gb={reserve_gib:g} GiB for the CUDA context and fragmentation)"]
    for v in verdicts:
        word = "fits        " if v["fits"] else "does NOT fit"
        lines.append(f"  {v['card']:>28}: {word} headroom {v['headroom_bytes'] / GIB:+7.2f} GiB")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- solve

@dataclass
class Solution:
    """The largest ``data.<key>`` whose plan fits ``capacity_bytes`` (None: not even the smallest)."""

    key: str                              # batch_size | crop_size
    capacity_bytes: int
    value: int | None
    peak_bytes: int | None                # the plan's peak at ``value``
    next_value: int | None                # the next size up, which does not fit (None: the search's end)
    next_peak_bytes: int | None
    tried: dict[int, int] = field(default_factory=dict)  # value -> planned peak

    def describe(self) -> str:
        name = f"data.{self.key}"
        if self.value is None:
            smallest = min(self.tried)
            return (f"no {name} fits {self.capacity_bytes / GIB:.2f} GiB: even {smallest} needs "
                    f"{self.tried[smallest] / GIB:.2f} GiB")
        if self.next_value is None:
            return f"{name}={self.value} fits ({self.peak_bytes / GIB:.2f} GiB); the search stops there (at least {self.value})"
        return (f"largest {name} that fits {self.capacity_bytes / GIB:.2f} GiB: {self.value} "
                f"({self.peak_bytes / GIB:.2f} GiB); {self.next_value} needs {self.next_peak_bytes / GIB:.2f} GiB")


def _smallest_crop(cfg: DictConfig) -> int:
    window = [int(w) for w in cfg.model.vrt.window_size]
    need = max(_CROP_STEP * max(window[1:]), 40)
    return -(-need // _CROP_STEP) * _CROP_STEP


def solve(cfg: DictConfig, key: str, capacity_bytes: int, *, target: str = "cuda",
          planner: Callable[..., StepPlan] = plan_training_step, known: StepPlan | None = None) -> Solution:
    """The largest ``data.batch_size`` (``key="batch"``) or square ``data.crop_size`` (``"crop"``, a
    multiple of 8 from the smallest the window takes) whose planned peak fits ``capacity_bytes``,
    the rest of ``cfg`` as given.

    The peak grows about linearly in the batch and in the crop's pixels: two plans give the line,
    its prediction is planned, then the neighbours until the answer fits and the next size does not.
    ``planner``: what plans a config (tests give a formula); ``known``: ``cfg``'s own plan, if made.
    """
    if key not in ("batch", "crop"):
        raise ValueError(f"memory.solve: expected batch, crop or null, got {key!r}")
    field_name = f"{key}_size"
    tried: dict[int, int] = {} if known is None else {int(cfg.data[field_name]): known.peak_bytes}

    def peak(value: int) -> int:
        if value not in tried:
            plan = planner(apply_overrides(cfg, [f"data.{field_name}={value}"]), target=target)
            tried[value] = plan.peak_bytes
            log.info("memory plan: data.%s=%d needs %.2f GiB", field_name, value, plan.peak_bytes / GIB)
        return tried[value]

    step = 1 if key == "batch" else _CROP_STEP
    lowest = 1 if key == "batch" else _smallest_crop(cfg)
    highest = MAX_BATCH if key == "batch" else None
    size = (lambda v: v) if key == "batch" else (lambda v: v * v)  # what the peak is linear in

    if peak(lowest) > capacity_bytes:
        return Solution(field_name, capacity_bytes, None, None, lowest, tried[lowest], tried)
    second = lowest + step if key == "batch" else max(int(cfg.data[field_name]), lowest + 4 * step)
    if highest is not None:
        second = min(second, highest)
    slope = (peak(second) - peak(lowest)) / max(size(second) - size(lowest), 1)
    room = (capacity_bytes - peak(lowest)) / slope + size(lowest) if slope > 0 else size(highest or second)
    guess = int(room) if key == "batch" else int(max(room, 0) ** 0.5)
    guess = max(lowest, guess - (guess - lowest) % step)
    if highest is not None:
        guess = min(guess, highest)

    # lo fits, hi (once known) does not. Up from a fit: the next size, then twice as far each
    # time; down from a miss: its neighbour first (the line is right to a step or two), then halves.
    lo, hi, probe, stride, missed = lowest, None, guess, step, False
    while hi is None or hi - lo > step:
        if hi is None and highest is not None and lo >= highest:
            break
        if probe > lo and peak(probe) <= capacity_bytes:
            lo = probe
        elif probe > lo:
            hi = probe
        if hi is None:
            probe = lo + stride if highest is None else min(lo + stride, highest)
            stride *= 2
            continue
        if hi - lo <= step:
            break
        probe = hi - step if not missed else lo + ((hi - lo) // (2 * step)) * step
        missed = True
    following = hi if hi is not None else (None if highest is not None and lo >= highest else lo + step)
    if following is not None and following not in tried:
        peak(following)
    return Solution(field_name, capacity_bytes, lo, tried[lo], following,
                    tried.get(following) if following is not None else None, tried)


# ---------------------------------------------------------------------------------------- levers

@dataclass(frozen=True)
class Lever:
    """A change that lowers a step's memory, as train.py overrides."""

    name: str
    overrides: tuple[str, ...]


def levers_for(cfg: DictConfig) -> list[Lever]:
    """The levers that apply to ``cfg``, cheapest in step time first (docs/PERFORMANCE.md,
    "Memory levers": each priced in memory by the plan and in time by ``python -m vrt_spike.bench``)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    levers = []
    if str(cfg.trainer.precision) in ("32", "32-true"):
        levers.append(Lever("bf16 mixed precision", ("trainer.precision=bf16-mixed",)))
    align = "model.vrt.use_checkpoint_align=true"
    if not model["vrt"].get("use_checkpoint_align", False):
        levers.append(Lever("alignment checkpointing", (align,)))
    every = checkpointing_overrides(model, on=True)
    if "use_checkpoint_align" not in model["vrt"]:  # a config from before the switch existed
        every.append(align)
    if every and every != [align]:
        levers.append(Lever("every checkpoint switch on", tuple(every)))
    return levers


def cheapest_fit(cfg: DictConfig, capacity_bytes: int, *, target: str = "cuda",
                 search_batch: bool = True) -> tuple[Lever | None, StepPlan | None, str]:
    """The cheapest single lever whose plan fits ``capacity_bytes``; else (``search_batch``) all of
    them with the largest batch that then fits, else the largest crop. Returns the lever (None when
    nothing fits), its plan and a sentence for the user."""
    levers = levers_for(cfg)
    for lever in levers:
        plan = plan_training_step(apply_overrides(cfg, lever.overrides), target=target)
        if plan.peak_bytes <= capacity_bytes:
            return lever, plan, (f"cheapest lever: {lever.name}: {' '.join(lever.overrides)} -> "
                                 f"{plan.peak_bytes / GIB:.2f} GiB, headroom {(capacity_bytes - plan.peak_bytes) / GIB:.2f} GiB")
    names = " + ".join(lever.name for lever in levers) or "no lever applies"
    if not search_batch:
        return None, None, (f"no single lever fits ({names}); for the largest batch or crop that does: "
                            "python -m vrt_spike.bench.memory <these overrides> memory.solve=batch (or crop)")
    combined = tuple(o for lever in levers for o in lever.overrides)
    everything = apply_overrides(cfg, combined)
    batch = solve(everything, "batch", capacity_bytes, target=target)
    if batch.value is not None:
        lever = Lever(f"{names} at batch {batch.value}", (*combined, f"data.batch_size={batch.value}"))
        return lever, None, (f"no single lever fits; {lever.name}: {' '.join(lever.overrides)} -> "
                             f"{batch.peak_bytes / GIB:.2f} GiB (keep the effective batch with "
                             "trainer.accumulate_grad_batches)")
    crop = solve(apply_overrides(everything, ["data.batch_size=1"]), "crop", capacity_bytes, target=target)
    if crop.value is None:
        return None, None, f"nothing fits {capacity_bytes / GIB:.2f} GiB, not even with {names}: {crop.describe()}"
    lever = Lever(f"{names} at batch 1, crop {crop.value}", (*combined, "data.batch_size=1", f"data.crop_size={crop.value}"))
    return lever, None, f"only a smaller crop fits; {lever.name}: {' '.join(lever.overrides)} ({crop.describe()})"


# ---------------------------------------------------------------------------------------- files

def write_plan(path: Path, plan: StepPlan, **extra: Any) -> Path:
    """``memory_plan.json``: the plan's fields (``peak_bytes``, ``params_bytes``, ``grads_bytes``,
    ``optimizer_bytes``, ``activations_bytes``, ``by_region``, ``overrides``, ...) and ``extra``."""
    body = {**plan.to_json(), **extra}
    write_text_atomically(path, json.dumps(body, indent=2, default=lambda o: asdict(o)) + "\n")
    return path


# ---------------------------------------------------------------------------------------- pre-flight

def check_before_fit(cfg: DictConfig, trainer: Any, run_dir: Path) -> StepPlan | None:
    """train.py's pre-flight: plan the step and stop before the first one if it cannot fit.

    ``memory.check``: ``auto`` plans on CUDA against each training device's free memory (the
    smallest), ``true`` also on a CPU against ``memory.device_gb`` (a config checked before it goes
    to a GPU box), ``false`` never. Rank 0 plans for every device before the other ranks start.
    ``memory.reserve_gb`` is kept free. Raises :class:`MemoryPlanError` with the plan's table and
    the cheapest lever; writes ``<run dir>/memory_plan.json`` either way.
    """
    memory = cfg.get("memory") or {}
    mode = memory.get("check", "auto")
    if mode not in ("auto", True, False):
        raise ValueError(f"memory.check: expected auto, true or false, got {mode!r}")
    cuda = trainer.strategy.root_device.type == "cuda"
    if mode is False or (mode == "auto" and not cuda) or int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return None
    reserve = float(memory.get("reserve_gb", 2.0))
    if cuda:
        free = min(torch.cuda.mem_get_info(i)[0] for i in trainer.device_ids)
        capacity, where = int(free - reserve * GIB), f"the free memory of cuda:{trainer.device_ids} ({free / GIB:.2f} GiB)"
    else:
        gib = float(memory.get("device_gb", 48))
        capacity, where = int((gib - reserve) * GIB), f"memory.device_gb={gib:g}"
    target = "cuda" if cuda else "cpu"  # the step that runs here (they differ in an unfused AdamW's temporaries)
    plan = plan_training_step(cfg, target=target)
    fits = plan.peak_bytes <= capacity
    message = (f"memory plan: the step needs {plan.peak_bytes / GIB:.2f} GiB ({plan.peak_phase}) of {where} less "
               f"memory.reserve_gb={reserve:g}: {'fits' if fits else 'does NOT fit'} (planned in {plan.plan_s:.0f} s)")
    if fits:
        write_plan(run_dir / PLAN_FILE, plan, capacity_bytes=capacity, fits=True)
        log.info(message)
        return plan
    lever, _, advice = cheapest_fit(cfg, capacity, target=target, search_batch=False)
    write_plan(run_dir / PLAN_FILE, plan, capacity_bytes=capacity, fits=False, advice=advice,
               lever=None if lever is None else list(lever.overrides))
    raise MemoryPlanError(f"{message}\n{plan_table(plan)}\n{advice}\n(memory.check=false skips this check; "
                          "python -m vrt_spike.bench.memory <overrides> memory.solve=batch plans without training)")
