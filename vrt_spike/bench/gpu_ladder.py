"""The users' training-speed ladder on one GPU, in one shot: one table of samples/s, peak memory, MFU
and the top timing regions, rung by rung.

    python -m vrt_spike.bench.gpu_ladder [--out PATH.csv] [--budget 540] [override ...]
    python -m vrt_spike.bench.gpu_ladder --smoke    # tiny sizes on the CPU (CI)
    bash benchmarks/gpu_ladder.sh                   # on a bare GPU box (wheels, then pytest -m cuda)

Rungs, each adding one switch to the one before, at clip 6 and 256^2 (192^2 for a rung that runs
out of memory at 256^2):

    baseline           model=baseline, fp32 (TF32 matmuls as the config's `tf32` says, default on),
                       torch AdamW without the fused kernel (optim.fused=false), batch 1, every
                       checkpoint switch on
    +bf16              trainer.precision=bf16-mixed
    +fused-adamw       optim=adamw as shipped (fused)                } the faster of the two
    +adamw8bit         optim=adamw8bit (bitsandbytes, not paged)     } goes on up the ladder
    +batch             data.batch_size=3
    -checkpointing     every boolean model.**.use_checkpoint* off
    +compile           model.compile=true (mode default)
    +reduce-overhead   model.compile_mode=reduce-overhead (CUDA graphs)
    opt@best, fast@best  model=opt and model=fast with the switches of the rung with the most samples/s

What a rung measures is train.py's own training step: the Hydra-composed `conf/train.yaml`
(`model=<preset>` and the rung's overrides) run by `vrt_spike.lit.training.train`, so the
LightningModule's `training_step`, the optimizer of `configure_optimizers`, Lightning's precision
plugin and the shipped TimingCallback, whose summary gives samples/s (warm-up steps excluded) and
the top-3 regions by exclusive time. Only the data differ: one random batch of the training shape
kept on the device (`vrt_spike.bench.step_measure.FixedBatchDataModule`), so no loading is measured
and no dataset is needed. Per rung also:
- peak GB: the allocator's high-water mark over the timed steps (`torch.cuda.max_memory_allocated`;
  on a CPU the process RSS);
- MFU: the executed FLOPs of one training step, recomputation included, as `python -m
  vrt_spike.bench` counts them (`vrt_spike.bench.flops` over the first warm-up step of the
  rung's own fit, eager, once per preset, crop and checkpointing, per sample, times the batch) over
  the mean step time and the device's dense peak for the rung's compute type
  (`vrt_spike.bench.peaks`);
- warm-up s: the untimed first steps (compilation and CUDA-graph recording happen there, and the
  eager FLOP-counted step of a rung that counts them);
- ops/step and kernels/step, from `torch.profiler` over the first timed step: aten operators called
  from the host (outside another aten operator), and the CUDA kernels that step ran (on a CPU:
  those operators plus the kernels inductor generated, each run once per compiled step). A
  host-bound step shows here: thousands of small launches that compile fuses.
A second table gives the optimizer-state memory and optimizer-step time of AdamW and 8-bit AdamW
at each preset's size (`vrt_spike.bench.optimizer`).

Each rung runs in its own subprocess (an out-of-memory or a compile leaves nothing behind), all
sharing one inductor cache (`TORCHINDUCTOR_CACHE_DIR` under the work dir), so `+reduce-overhead`
reuses the kernels `+compile` built, with every CPU core compiling. The whole ladder has a time
budget (`--budget`, 9 minutes): a rung has a cap of its own and starts only when enough of the
budget is left, otherwise its row says it was skipped and why; a subprocess that outlives its time
is stopped and its row says where it was. The compile rungs run only in what is left after two
eager rungs' time is kept for `opt@best` and `fast@best`, which fall back to the best eager rung
when the budget left cannot pay for another compilation, and say so. A crop at which a rung of the
same preset that needs no more memory (batch, checkpointing, precision) ran out of memory is not
tried again.

Output: `--out` (default `$OUT/gpu_ladder.csv` when `$OUT` is set, else `benchmarks/gpu_ladder.csv`),
written atomically, with `<stem>_optimizers.csv` and `<stem>.md` (both tables) beside it; every
column is present in every row (empty in the CSV, `n/a` in the markdown, where a rung did not run).
Per-rung logs, timing tables and run dirs stay in the work dir (`--work-dir`, default a new temp dir).

`--smoke` runs the same ladder with `model=tiny` for every preset at 48^2 (40^2 after an
out-of-memory), clip 2, 2 timed steps, on the CPU. `--skip-compile` reports the two compile rungs
as skipped; `--in-process` runs the rungs in this process (no isolation, no time limits inside a
rung: for tests).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrt_spike import PROJECT_ROOT
from vrt_spike.atomic import write_text_atomically

log = logging.getLogger("gpu_ladder")

GB = 1e9
RESULT_FILE = "result.json"
PHASE = "[ladder] phase:"  # a worker's log line naming what it does now (read after a timeout)

LADDER = ("baseline", "+bf16", "+fused-adamw", "+adamw8bit", "+batch", "-checkpointing", "+compile",
          "+reduce-overhead", "opt@best", "fast@best")
COMPILE_RUNGS = ("+compile", "+reduce-overhead")
PRESETS = ("baseline", "opt", "fast")

COLUMNS = ("rung", "preset", "precision", "compute_dtype", "optimizer", "batch_size", "checkpointing",
           "compile", "clip_len", "crop_size", "samples_per_s", "step_ms", "peak_gb", "planned_gb", "mem_kind", "mfu",
           "flops_per_step", "peak_tflops", "top1_region", "top1_ms", "top2_region", "top2_ms",
           "top3_region", "top3_ms", "ops_per_step", "kernels_per_step", "warmup_s", "timed_steps", "rung_s",
           "status")


# ---------------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Switches:
    """What a rung changes: the training keys the ladder turns."""

    precision: str = "32"
    optim: str = "adamw"
    fused: bool | None = False       # optim.fused; None: the group's default (auto: fused)
    batch_size: int = 1
    checkpointing: bool = True       # every boolean model.**.use_checkpoint*
    compile_mode: str | None = None  # None: eager; else model.compile=true in this mode

    @property
    def kind(self) -> str:
        """The budget class of a rung with these switches."""
        return "eager" if self.compile_mode is None else "reduce-overhead" if self.compile_mode == "reduce-overhead" else "compile"


@dataclass(frozen=True)
class Profile:
    """Sizes, loop lengths and time budgets of one ladder (the GPU one or `--smoke`)."""

    device: str                          # cuda | cpu
    presets: Mapping[str, str]           # baseline / opt / fast -> the preset that runs
    clip_len: int
    crops: tuple[int, ...]               # tried in order; the next one after an out-of-memory
    batch: int                           # the `+batch` rung's batch size
    warmup: Mapping[str, int]            # per kind: eager, compile, reduce-overhead
    min_steps: int                       # timed steps per rung: at least,
    max_steps: int                       # at most,
    measure_s: float                     # and stop after this long once min_steps have run
    budget_s: float                      # the whole ladder
    cap_s: Mapping[str, float]           # per kind (and `optimizers`): a rung's longest run
    min_start_s: Mapping[str, float]     # per kind: a rung starts only with this much budget left
    optimizer_iters: int = 10
    overrides: tuple[str, ...] = ()      # Hydra overrides for every rung and the optimizer table


GPU = Profile(
    device="cuda", presets={p: p for p in PRESETS}, clip_len=6, crops=(256, 192), batch=3,
    warmup={"eager": 2, "compile": 3, "reduce-overhead": 4}, min_steps=3, max_steps=20, measure_s=6.0,
    budget_s=540.0,
    cap_s={"optimizers": 60.0, "eager": 75.0, "compile": 240.0, "reduce-overhead": 150.0},
    min_start_s={"optimizers": 20.0, "eager": 25.0, "compile": 60.0, "reduce-overhead": 45.0},
)
SMOKE = Profile(
    device="cpu", presets={p: "tiny" for p in PRESETS}, clip_len=2, crops=(48, 40), batch=2,
    warmup={"eager": 1, "compile": 2, "reduce-overhead": 3}, min_steps=2, max_steps=2, measure_s=0.0,
    budget_s=1200.0,
    cap_s={"optimizers": 120.0, "eager": 180.0, "compile": 600.0, "reduce-overhead": 600.0},
    min_start_s={"optimizers": 10.0, "eager": 10.0, "compile": 30.0, "reduce-overhead": 30.0},
    optimizer_iters=3,
)


@dataclass(frozen=True)
class RungSpec:
    """Everything a worker needs to measure one rung (JSON-serialisable)."""

    rung: str
    preset: str
    switches: Switches
    device: str
    clip_len: int
    crop_size: int
    warmup: int
    min_steps: int
    max_steps: int
    measure_s: float
    run_dir: str
    flops_per_sample: int | None = None  # known from an earlier rung of the same preset, crop, checkpointing
    peak_tflops: float | None = None     # MFU peak override (a CPU has no table entry)
    overrides: tuple[str, ...] = ()      # the profile's extra Hydra overrides, before the rung's own

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RungSpec:
        data = json.loads(text)
        return cls(**{**data, "switches": Switches(**data["switches"]), "overrides": tuple(data["overrides"])})


# ---------------------------------------------------------------------------------------- config

def rung_config(spec: RungSpec) -> Any:
    """The composed `conf/train.yaml` of a rung: the preset, the rung's switches, the fixed batch,
    only the timing callback (plus the StepClock, which counts the FLOPs of the first warm-up step
    when they are not known yet), no logger, no validation, no checkpoints
    (`vrt_spike.bench.step_measure.fixed_batch_config`)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vrt_spike.lit.config import set_checkpointing
    from vrt_spike.bench.step_measure import fixed_batch_config

    sw = spec.switches
    overrides = [
        *spec.overrides,
        f"model={spec.preset}", f"trainer={'gpu' if spec.device == 'cuda' else 'cpu'}", f"optim={sw.optim}",
        "logger=none", f"trainer.precision={sw.precision}",
        f"data.batch_size={sw.batch_size}", f"data.clip_len={spec.clip_len}", f"data.crop_size={spec.crop_size}",
        f"model.compile={str(sw.compile_mode is not None).lower()}",
    ]
    if sw.fused is not None:
        overrides.append(f"optim.fused={str(sw.fused).lower()}")
    if sw.compile_mode is not None:
        overrides.append(f"model.compile_mode={sw.compile_mode}")
    if sw.optim == "adamw8bit":
        overrides.append("optim.paged=false")
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    model = set_checkpointing(OmegaConf.to_container(cfg.model, resolve=True), sw.checkpointing)
    count_flops = spec.flops_per_sample is None
    # The FLOP-counted step is a warm-up step, never a timed one.
    warmup = max(spec.warmup, 1) if count_flops else spec.warmup
    return fixed_batch_config(cfg, run_dir=spec.run_dir, warmup=warmup, min_steps=spec.min_steps,
                              max_steps=spec.max_steps, seconds=spec.measure_s, count_ops=True,
                              count_flops=count_flops, model=model)


# ---------------------------------------------------------------------------------------- worker

def _phase(name: str) -> None:
    print(f"{PHASE} {name}", flush=True)


def measure_rung(spec: RungSpec) -> dict[str, Any]:
    """Run one rung through `vrt_spike.lit.training.train` and return its table row (status ok)."""
    import torch

    from vrt_spike.lit.training import train
    from vrt_spike.bench.step_measure import read_clock
    from vrt_spike.bench.peaks import compute_dtype_for, mfu, resolve_peak
    from vrt_spike.timing.console import top_regions
    from vrt_spike.timing.table import read_meta, read_summary

    t0 = time.perf_counter()
    device = torch.device(spec.device)
    cfg = rung_config(spec)
    _phase("fit (warm-up, then timed steps)")
    train(cfg)
    run_dir = Path(spec.run_dir)
    clock = read_clock(run_dir)
    sw = spec.switches
    flops_per_sample = spec.flops_per_sample
    if flops_per_sample is None:
        flops_per_sample = clock["flops_per_step"] // sw.batch_size
    stats = read_summary(run_dir)
    meta = read_meta(run_dir)
    step = next((s for s in stats if s.region == "step"), None)
    if step is None or not clock["timed_steps"]:
        raise RuntimeError(f"{spec.rung}: no timed step in {run_dir} (warm-up {spec.warmup} steps, "
                           f"{clock['timed_steps']} timed)")
    # After the fit: the TF32 setting it ran with (TF32 is a CUDA tensor-core type; a CPU runs fp32).
    compute_dtype = compute_dtype_for(sw.precision, None if device.type == "cuda" else "highest")
    peak = resolve_peak(device, compute_dtype, spec.peak_tflops)
    flops_per_step = flops_per_sample * sw.batch_size
    row = {
        "rung": spec.rung, "preset": spec.preset, "precision": sw.precision, "compute_dtype": compute_dtype,
        "optimizer": clock["optimizer"], "batch_size": sw.batch_size,
        "checkpointing": "on" if sw.checkpointing else "off", "compile": sw.compile_mode or "eager",
        "clip_len": spec.clip_len, "crop_size": spec.crop_size,
        "samples_per_s": meta["samples_per_s"], "step_ms": step.mean_ms,
        "peak_gb": clock["peak_bytes"] / GB, "mem_kind": clock["mem_kind"],
        "planned_gb": None if clock.get("planned_peak_bytes") is None else clock["planned_peak_bytes"] / GB,
        "mfu": mfu(flops_per_step, step.mean_ms / 1e3, peak.tflops), "flops_per_step": flops_per_step,
        "peak_tflops": peak.tflops, "ops_per_step": clock["ops_per_step"],
        # CUDA: kernels the profiled step ran. CPU: each outer aten operator plus each kernel
        # inductor generated (every generated kernel runs once per step of a compiled graph).
        "kernels_per_step": (clock["cuda_kernels_per_step"] if device.type == "cuda"
                             else clock["ops_per_step"] + clock["inductor_kernels"]),
        "warmup_s": clock["warmup_s"], "timed_steps": clock["timed_steps"],
        "rung_s": time.perf_counter() - t0, "status": "ok",
    }
    top = top_regions(stats, 3)
    for i in range(3):
        region = top[i] if i < len(top) else None
        row[f"top{i + 1}_region"] = region.region if region else "-"
        row[f"top{i + 1}_ms"] = region.self_ms if region else 0.0
    row["_flops_per_sample"] = flops_per_sample
    return row


def failure(err: BaseException) -> tuple[str, str]:
    """(`oom` | `failed`, a one-line reason) of an exception raised by a rung. A rung the memory
    plan stopped before its first step (`MemoryPlanError`) counts as out of memory."""
    seen: BaseException | None = err
    while seen is not None:
        if (type(seen).__name__ in ("OutOfMemoryError", "MemoryPlanError")
                or "out of memory" in str(seen).lower()):
            return "oom", f"out of memory: {str(seen).splitlines()[0][:160] if str(seen) else type(seen).__name__}"
        seen = seen.__cause__ or seen.__context__
    text = str(err).splitlines()[0][:200] if str(err) else ""
    return "failed", f"{type(err).__name__}: {text}"


def worker_main(spec_path: Path) -> int:
    """`--worker SPEC.json`: measure one rung; the row (or the failure) goes to `<run_dir>/result.json`."""
    spec = RungSpec.from_json(spec_path.read_text())
    out = Path(spec.run_dir) / RESULT_FILE
    try:
        row = measure_rung(spec)
    except BaseException as err:
        status, reason = failure(err)
        write_text_atomically(out, json.dumps({"status": status, "reason": reason}))
        raise
    write_text_atomically(out, json.dumps(row))
    return 0


def optimizer_figures_main(device_name: str, presets: Sequence[str], iters: int, out: Path,
                           overrides: Sequence[str] = ()) -> int:
    """`--optimizers`: AdamW vs 8-bit AdamW (the shipped optim groups, 8-bit not paged, as the
    `+adamw8bit` rung runs it) at each preset's size (`vrt_spike.bench.optimizer_figures`)."""
    import torch
    from hydra import compose, initialize_config_dir

    from vrt_spike.bench.run import optimizer_figures, shipped_optim_config

    device = torch.device(device_name)
    rows: list[dict[str, Any]] = []
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        optim_cfgs = {"adamw": shipped_optim_config("adamw"),
                      "adamw8bit": {**shipped_optim_config("adamw8bit"), "paged": False}}
        for preset in dict.fromkeys(presets):
            _phase(f"optimizer figures of {preset}")
            model_cfg = compose("train", overrides=[*overrides, f"model={preset}", "paths.output_dir=/unused"]).model
            rows += optimizer_figures(model_cfg, optim_cfgs, model=preset, device=device, warmup=1, iters=iters, seed=0)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    write_text_atomically(out, json.dumps(rows))
    return 0


# ---------------------------------------------------------------------------------------- parent

def _worker_env(work_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("WANDB_MODE", "offline")
    # One inductor cache for every rung (reduce-overhead reuses the default rung's kernels), and
    # every core compiling.
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(work_dir / "inductor_cache"))
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(os.cpu_count() or 1))
    return env


def _last_phase(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return "starting"
    phases = [line[len(PHASE):].strip() for line in lines if line.startswith(PHASE)]
    return phases[-1] if phases else "starting"


def _last_line(log_path: Path) -> str:
    try:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def run_subprocess(args: list[str], log_path: Path, timeout_s: float, env: Mapping[str, str]) -> str | None:
    """Run `python -m vrt_spike.bench.gpu_ladder ARGS` with output to `log_path`; None, or why it did not finish."""
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vrt_spike.bench.gpu_ladder", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=dict(env), start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and its compile workers, nothing else
            proc.wait()
            return f"timeout: stopped after {timeout_s:.0f} s during {_last_phase(log_path)} (log {log_path})"
    if code != 0:
        return f"exit code {code}: {_last_line(log_path)} (log {log_path})"
    return None


@dataclass
class Ladder:
    """Runs the rungs against one deadline; `rows` in ladder order."""

    profile: Profile
    work_dir: Path
    in_process: bool = False
    skip_compile: bool = False
    peak_tflops: float | None = None
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    optimizer_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    optimizer_status: str = "not run"

    def __post_init__(self) -> None:
        self.start = time.perf_counter()
        self.deadline = self.start + self.profile.budget_s
        self.flops: dict[tuple[str, int, bool], int] = {}  # (preset, crop, checkpointing) -> FLOPs per sample
        self.switches: dict[str, Switches] = {}
        self.ooms: list[tuple[str, int, str, Switches]] = []  # (preset, crop, rung, switches) that ran out of memory
        self.env = _worker_env(self.work_dir)

    def left_s(self) -> float:
        return self.deadline - time.perf_counter()

    # ------------------------------------------------------------------ one rung
    def eager_estimate_s(self) -> float:
        """What an eager rung costs: the longest one so far (before any, the least an eager rung may start with)."""
        ran = [r["rung_s"] for r in self.rows if r["status"].startswith("ok") and r["compile"] == "eager"]
        return max(ran, default=self.profile.min_start_s["eager"])

    def measure(self, rung: str, preset_role: str, switches: Switches, note: str = "",
                reserve_s: float = 0.0) -> dict[str, Any]:
        """Measure a rung (retrying at the next crop after an out-of-memory); append and return its row.

        `reserve_s` of the budget is kept for the rungs after this one."""
        p = self.profile
        preset = p.presets[preset_role]
        self.switches[rung] = switches
        kind = switches.kind
        oom_notes: list[str] = []
        crops = list(p.crops)
        # A crop at which a rung of this preset needing no more memory ran out of memory is not tried.
        known = [(c, r) for (pr, c, r, sw) in self.ooms if pr == preset and _needs_at_least(switches, sw)]
        while len(crops) > 1 and any(c == crops[0] for c, _ in known):
            oom_notes.append(f"{crops[0]}^2 not tried: {next(r for c, r in known if c == crops[0])} ran out of "
                             "memory there")
            crops.pop(0)
        row: dict[str, Any] | None = None
        for crop in crops:
            left = self.left_s() - reserve_s
            if left < p.min_start_s[kind]:
                kept = f" after {reserve_s:.0f} s kept for opt@best and fast@best" if reserve_s else ""
                row = self._row_without_run(rung, preset, switches, crop, "skipped: ladder budget: "
                                            f"{max(left, 0):.0f} s left{kept}, a {kind} rung needs >= "
                                            f"{p.min_start_s[kind]:.0f} s")
                break
            spec = RungSpec(rung=rung, preset=preset, switches=switches, device=p.device, clip_len=p.clip_len,
                            crop_size=crop, warmup=p.warmup[kind], min_steps=p.min_steps, max_steps=p.max_steps,
                            measure_s=p.measure_s, run_dir=str(self.work_dir / _slug(f"{rung}-{crop}")),
                            flops_per_sample=self.flops.get((preset, crop, switches.checkpointing)),
                            peak_tflops=self.peak_tflops, overrides=p.overrides)
            row = self._run(spec, timeout_s=min(p.cap_s[kind], left))
            if row["status"] == "ok":
                self.flops[(preset, crop, switches.checkpointing)] = row.pop("_flops_per_sample")
            if row["status"].startswith("oom"):
                self.ooms.append((preset, crop, rung, switches))
                if crop != crops[-1]:
                    oom_notes.append(f"out of memory at {crop}^2")
                    continue
            break
        assert row is not None
        notes = [n for n in (note, *oom_notes) if n]
        if notes:
            row["status"] += f" ({'; '.join(notes)})"
        self.rows.append(row)
        log.info("%s: %s", rung, _one_line(row))
        return row

    def skip(self, rung: str, preset_role: str, switches: Switches, reason: str) -> dict[str, Any]:
        self.switches[rung] = switches
        row = self._row_without_run(rung, self.profile.presets[preset_role], switches, self.profile.crops[0],
                                    f"skipped: {reason}")
        self.rows.append(row)
        log.info("%s: %s", rung, row["status"])
        return row

    def _run(self, spec: RungSpec, timeout_s: float) -> dict[str, Any]:
        run_dir = Path(spec.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if self.in_process:
            try:
                return measure_rung(spec)
            except Exception as err:  # recorded in the table, the traceback logged: the ladder goes on
                log.exception("%s failed", spec.rung)
                status, reason = failure(err)
                return self._row_without_run(spec.rung, spec.preset, spec.switches, spec.crop_size,
                                             f"{status}: {reason}", time.perf_counter() - t0)
        spec_path = run_dir / "spec.json"
        write_text_atomically(spec_path, spec.to_json())
        log_path = run_dir / "worker.log"
        problem = run_subprocess(["--worker", str(spec_path)], log_path, timeout_s, self.env)
        elapsed = time.perf_counter() - t0
        result_path = run_dir / RESULT_FILE
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
        if result is not None and result.get("status") == "ok":
            result["rung_s"] = elapsed  # with the subprocess's start
            return result
        if result is not None:
            status = f"{result['status']}: {result['reason']}"
            if result["status"] != "skipped":
                status += f" (log {log_path})"
        else:
            status = f"failed: {problem or 'the worker wrote no result'}"
            if problem and problem.startswith("timeout"):
                status = problem
        return self._row_without_run(spec.rung, spec.preset, spec.switches, spec.crop_size, status, elapsed)

    def _row_without_run(self, rung: str, preset: str, sw: Switches, crop: int, status: str,
                         rung_s: float | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {c: None for c in COLUMNS}
        row.update(rung=rung, preset=preset, precision=sw.precision, batch_size=sw.batch_size,
                   optimizer=sw.optim, checkpointing="on" if sw.checkpointing else "off",
                   compile=sw.compile_mode or "eager", clip_len=self.profile.clip_len, crop_size=crop,
                   rung_s=rung_s, status=status)
        return row

    # ------------------------------------------------------------------ optimizer table
    def measure_optimizers(self) -> None:
        p = self.profile
        presets = list(dict.fromkeys(p.presets[r] for r in PRESETS))
        left = self.left_s()
        if left < p.min_start_s["optimizers"]:
            self.optimizer_status = f"skipped: ladder budget: {left:.0f} s left"
            return
        out = self.work_dir / "optimizers" / RESULT_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        if self.in_process:
            optimizer_figures_main(p.device, presets, p.optimizer_iters, out, p.overrides)
        else:
            problem = run_subprocess(["--optimizers", "--device", p.device, "--presets", *presets,
                                      "--optimizer-iters", str(p.optimizer_iters), "--result", str(out),
                                      *p.overrides],
                                     out.parent / "worker.log", min(p.cap_s["optimizers"], left), self.env)
            if problem:
                self.optimizer_status = f"failed: {problem}"
                return
        self.optimizer_rows = json.loads(out.read_text())
        self.optimizer_status = "ok"

    # ------------------------------------------------------------------ the ladder
    def run(self) -> None:
        self.measure_optimizers()
        sw = Switches()
        self.measure("baseline", "baseline", sw)
        sw = dataclasses.replace(sw, precision="bf16-mixed")
        self.measure("+bf16", "baseline", sw)
        bf16 = sw
        self.measure("+fused-adamw", "baseline", dataclasses.replace(bf16, fused=None))
        eight = dataclasses.replace(bf16, optim="adamw8bit", fused=None)
        self.measure("+adamw8bit", "baseline", eight)
        sw = self._faster(("+fused-adamw", "+adamw8bit", "+bf16"))
        sw = dataclasses.replace(sw, batch_size=self.profile.batch)
        self.measure("+batch", "baseline", sw)
        sw = dataclasses.replace(sw, checkpointing=False)
        self.measure("-checkpointing", "baseline", sw)
        for rung, mode in zip(COMPILE_RUNGS, ("default", "reduce-overhead")):
            sw = dataclasses.replace(sw, compile_mode=mode)
            if self.skip_compile:
                self.skip(rung, "baseline", sw, "--skip-compile")
            else:  # compilations run only in the time that opt@best and fast@best do not need
                self.measure(rung, "baseline", sw, reserve_s=2 * self.eager_estimate_s())
        self._presets_at_best()

    def _row(self, rung: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["rung"] == rung), None)

    def _faster(self, rungs: Sequence[str]) -> Switches:
        """The switches of the rung with the most samples/s among `rungs` that ran (else the last)."""
        ran = [r for r in (self._row(n) for n in rungs) if r is not None and r["status"].startswith("ok")]
        if not ran:
            return self.switches[rungs[-1]]
        return self.switches[max(ran, key=lambda r: r["samples_per_s"])["rung"]]

    def _presets_at_best(self) -> None:
        ran = [r for r in self.rows if r["status"].startswith("ok")]
        for role in ("opt", "fast"):
            rung = f"{role}@best"
            if not ran:
                self.skip(rung, role, Switches(), "no rung of the ladder ran")
                continue
            best = max(ran, key=lambda r: r["samples_per_s"])
            sw, note = self.switches[best["rung"]], f"switches of {best['rung']}"
            if sw.compile_mode is not None:
                need = best["rung_s"] * 1.2
                eager = [r for r in ran if self.switches[r["rung"]].compile_mode is None]
                if self.left_s() < need + (self.eager_estimate_s() if role == "opt" else 0) and eager:
                    fallback = max(eager, key=lambda r: r["samples_per_s"])
                    note = (f"switches of {fallback['rung']}, the best eager rung: compiling {role} would need "
                            f"~{need:.0f} s, {self.left_s():.0f} s left")
                    sw = self.switches[fallback["rung"]]
            # A compiled opt@best leaves fast@best the time of an eager rung.
            reserve = self.eager_estimate_s() if role == "opt" and sw.compile_mode is not None else 0.0
            self.measure(rung, role, sw, note=note, reserve_s=reserve)

    # ------------------------------------------------------------------ output
    def write(self, out: Path) -> dict[str, Path]:
        """The CSV tables and the markdown beside them, each written atomically."""
        from vrt_spike.bench.optimizer import FIGURE_COLUMNS, figures_text

        out.parent.mkdir(parents=True, exist_ok=True)
        paths = {"ladder": out, "optimizers": out.with_name(f"{out.stem}_optimizers.csv"),
                 "markdown": out.with_suffix(".md")}
        write_text_atomically(paths["ladder"], _csv(COLUMNS, self.rows))
        write_text_atomically(paths["optimizers"], _csv(FIGURE_COLUMNS, self.optimizer_rows))
        opt_text = figures_text(self.optimizer_rows) if self.optimizer_rows else ""
        text = (f"{self.header()}\n\n{markdown_table(self.rows)}\n"
                f"Optimizer state and step at each preset's size ({self.optimizer_status}):\n\n{opt_text}")
        write_text_atomically(paths["markdown"], text)
        return paths

    def header(self) -> str:
        import torch

        p = self.profile
        device = torch.cuda.get_device_name() if p.device == "cuda" else f"cpu ({os.cpu_count()} cores)"
        return (f"GPU ladder on {device}, torch {torch.__version__}, clip {p.clip_len}, crops "
                f"{' then '.join(f'{c}^2' for c in p.crops)}; {time.perf_counter() - self.start:.0f} s of a "
                f"{p.budget_s:.0f} s budget. samples/s and step ms over the timed steps (TimingCallback), peak "
                "GB over the timed steps, MFU = executed FLOPs per step (recomputation included) / step time / "
                "dense peak, top regions by exclusive ms per step, warm-up s includes compilation.")


def _needs_at_least(a: Switches, b: Switches) -> bool:
    """Whether a step with switches `a` needs at least the memory of one with `b`: a batch as large,
    checkpointing off where `b` has it off, fp32 where `b` runs fp32 (optimizer states and
    compilation move the peak by far less than the activations do)."""
    return (a.batch_size >= b.batch_size and (not a.checkpointing or b.checkpointing)
            and (a.precision == "32" or b.precision != "32"))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    return buf.getvalue()


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None or value == "" else format(float(value) * scale, spec)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| rung | preset | precision | optimizer | batch | ckpt | compile | crop | samples/s | step ms | "
             "peak GB | planned GB | MFU % | top-3 regions (self ms/step) | kernels/step | warm-up s | status |",
             "|---|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        tops = ("; ".join(f"{r[f'top{i}_region']} {float(r[f'top{i}_ms']):.0f}" for i in (1, 2, 3))
                if r.get("top1_region") else "n/a")
        lines.append(
            f"| {r['rung']} | {r['preset']} | {r['precision']}"
            f"{'' if not r.get('compute_dtype') else ' (' + str(r['compute_dtype']) + ')'} | {r['optimizer']} | "
            f"{r['batch_size']} | {r['checkpointing']} | {r['compile']} | {r['crop_size']} | "
            f"{_fmt(r.get('samples_per_s'), '.3f')} | {_fmt(r.get('step_ms'), '.1f')} | "
            f"{_fmt(r.get('peak_gb'), '.2f')} | {_fmt(r.get('planned_gb'), '.2f')} | {_fmt(r.get('mfu'), '.1f', 100)} | {tops} | "
            f"{_fmt(r.get('kernels_per_step'), '.0f')} | {_fmt(r.get('warmup_s'), '.1f')} | {r['status']} |")
    return "\n".join(lines) + "\n"


def _one_line(row: Mapping[str, Any]) -> str:
    if not row["status"].startswith("ok"):
        return row["status"]
    return (f"{_fmt(row['samples_per_s'], '.3f')} samples/s, {_fmt(row['step_ms'], '.1f')} ms/step, "
            f"peak {_fmt(row['peak_gb'], '.2f')} GB, warm-up {_fmt(row['warmup_s'], '.1f')} s, {row['status']}")


# ---------------------------------------------------------------------------------------- CLI

def default_out() -> Path:
    out_dir = os.environ.get("OUT")
    return (Path(out_dir) if out_dir else PROJECT_ROOT / "benchmarks") / "gpu_ladder.csv"


def _parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="model=tiny at tiny sizes on the CPU")
    p.add_argument("--out", type=Path, default=None, help="CSV of the ladder (default: $OUT or benchmarks/)")
    p.add_argument("--work-dir", type=Path, default=None, help="per-rung logs and run dirs (default: a new temp dir)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole ladder (default: 540, smoke 1200)")
    p.add_argument("--timed-steps", type=int, default=None, help="timed steps per rung (min = max)")
    p.add_argument("--peak-tflops", type=float, default=None, help="MFU peak override (needed on a CPU)")
    p.add_argument("--skip-compile", action="store_true", help="report the compile rungs as skipped")
    p.add_argument("--in-process", action="store_true", help="no subprocesses (tests; no time limit inside a rung)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every rung (e.g. data.num_bins=8), before "
                   "the rung's own")
    # internal: one measurement in a subprocess
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--optimizers", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", default=None, help=argparse.SUPPRESS)
    p.add_argument("--presets", nargs="*", default=None, help=argparse.SUPPRESS)
    p.add_argument("--optimizer-iters", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def profile_for(args: argparse.Namespace) -> Profile:
    profile = SMOKE if args.smoke else GPU
    changes: dict[str, Any] = {}
    if args.budget is not None:
        changes["budget_s"] = args.budget
    if args.timed_steps is not None:
        if args.timed_steps < 1:
            raise ValueError(f"--timed-steps must be >= 1, got {args.timed_steps}")
        changes.update(min_steps=args.timed_steps, max_steps=args.timed_steps)
    if args.overrides:
        changes["overrides"] = tuple(args.overrides)
    profile = dataclasses.replace(profile, **changes)
    if profile.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("gpu_ladder: no CUDA device here; run on a GPU box, or --smoke for the CPU ladder")
    return profile


def run(args: argparse.Namespace, progress: Callable[[str], None] = print) -> Ladder:
    profile = profile_for(args)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu_ladder_"))
    work_dir.mkdir(parents=True, exist_ok=True)
    out = args.out or default_out()
    ladder = Ladder(profile, work_dir.resolve(), in_process=args.in_process, skip_compile=args.skip_compile,
                    peak_tflops=args.peak_tflops)
    progress(f"gpu_ladder: {profile.device}, budget {profile.budget_s:.0f} s, work dir {work_dir}")
    ladder.run()
    paths = ladder.write(out)
    progress(paths["markdown"].read_text())
    progress("written: " + ", ".join(str(p) for p in paths.values()))
    return ladder


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    if args.optimizers:
        return optimizer_figures_main(args.device, args.presets, args.optimizer_iters, args.result, args.overrides)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
