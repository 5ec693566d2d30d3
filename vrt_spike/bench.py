"""Profile / benchmark CLI: step time, samples/s, memory, FLOPs/MFU and per-stage times of a preset.

    python -m vrt_spike.bench model=fast data.crop_size=256 data.clip_len=6 data.batch_size=1
    python -m vrt_spike.bench -m model=baseline,opt,fast trainer.precision=32,bf16-mixed
    python -m vrt_spike.bench bench.compare=benchmarks/results.jsonl
    python -m vrt_spike.bench -m model=fast,opt,baseline bench.optimizer_figures=true

Random inputs (no dataset) of `data.batch_size` x `data.clip_len` frames of `data.crop_size`^2
with `data.num_bins` spike channels on `bench.device` (the training keys, so presets apply). Per configuration: `bench.warmup` untimed (the first one
under the FLOP counter) and `bench.iters` timed training steps (forward, Charbonnier loss, backward, optimizer step) and
inference forwards (`torch.no_grad`), FLOPs of one step and one forward, MFU, and
`bench.breakdown_steps` further steps under the StageTimer for the per-stage table. One row per
configuration is appended to `bench.out` (CSV) and its `.jsonl` sibling, and to `bench.csv` /
`bench.jsonl` in the Hydra run dir. A multirun (`-m`) ends with a comparison table (speedup and
memory saving against the first configuration) printed and written to
`<sweep dir>/comparison.{txt,csv}` by `CompareCallback`.

`bench.optimizer_figures=true` measures instead the optimizer-state memory and optimizer-step time
of every optimizer group (AdamW, 8-bit AdamW) on the preset's network
(`vrt_spike.profiling.optimizer`), into `optimizer_figures.{csv,md}` of the run (one table over
the jobs of a multirun in the sweep dir).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import platform
import socket
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from torch import Tensor, nn

from vrt_spike.profiling.flops import FlopCount, count_flops, deform_conv_op_names
from vrt_spike.profiling.measure import PeakMemory, Spread, time_callable
from vrt_spike.profiling.peaks import compute_dtype_for, mfu, resolve_peak
from vrt_spike.profiling.report import (
    Comparison, compare_rows, comparison_table, render_text, summary_table,
)
from vrt_spike.atomic import write_text_atomically
from vrt_spike.profiling.results import append_row, read_jsonl
from vrt_spike.timing.console import render_table
from vrt_spike.timing.table import RegionStats, TimingRow, summarize
from vrt_spike.timing.timer import StageTimer

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class BenchSpec:
    """What to measure: input shape, loop lengths, precision and device."""

    batch_size: int
    clip_len: int
    crop_size: int
    num_bins: int
    warmup: int
    iters: int
    breakdown_steps: int
    precision: str
    device: torch.device
    peak_tflops: float | None = None

    def __post_init__(self) -> None:
        for key in ("batch_size", "clip_len", "crop_size", "num_bins"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key} must be >= 1, got {getattr(self, key)!r}")
        if self.iters < 1:
            raise ValueError(f"bench.iters must be >= 1, got {self.iters!r}")
        for key in ("warmup", "breakdown_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"bench.{key} must be >= 0, got {getattr(self, key)!r}")
        compute_dtype_for(self.precision)  # validates trainer.precision


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available else cpu; otherwise a torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"bench.device={name!r} but CUDA is not available on this machine")
    return device


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"


@dataclass
class Precision:
    """Autocast context, grad scaler and parameter/input dtype for a Lightning precision string."""

    autocast: Callable[[], AbstractContextManager[Any]]
    scaler: torch.amp.GradScaler | None
    dtype: torch.dtype


def precision_setup(precision: str, device: torch.device) -> Precision:
    p = str(precision)
    if p in ("32", "32-true"):
        return Precision(nullcontext, None, torch.float32)
    if p == "bf16-mixed":
        return Precision(lambda: torch.autocast(device.type, dtype=torch.bfloat16), None,
                         torch.float32)
    if p == "16-mixed":
        return Precision(lambda: torch.autocast(device.type, dtype=torch.float16),
                         torch.amp.GradScaler(device.type), torch.float32)
    if p == "bf16-true":
        return Precision(nullcontext, None, torch.bfloat16)
    if p == "16-true":
        return Precision(nullcontext, None, torch.float16)
    raise ValueError(f"trainer.precision: unsupported value {precision!r}")


@dataclass(frozen=True)
class Inputs:
    rgb: Tensor     # (B, T, 3, H, W)
    spike: Tensor | None  # (B, T, K, H, W)
    target: Tensor  # (B, T, 3, H, W)


def random_inputs(spec: BenchSpec, dtype: torch.dtype, use_spike: bool) -> Inputs:
    """Uniform [0, 1] RGB clip, target and spike representation on `spec.device`."""
    shape = (spec.batch_size, spec.clip_len)
    hw = (spec.crop_size, spec.crop_size)
    kw = dict(device=spec.device, dtype=dtype)
    spike = torch.rand(*shape, spec.num_bins, *hw, **kw) if use_spike else None
    return Inputs(rgb=torch.rand(*shape, 3, *hw, **kw), spike=spike,
                  target=torch.rand(*shape, 3, *hw, **kw))


def _timer_region(timer: Any, name: str) -> AbstractContextManager[Any]:
    return timer.region(name) if timer is not None else nullcontext()


def make_train_step(net: Callable[..., Tensor], optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                    inputs: Inputs, precision: Precision) -> Callable[[Any], None]:
    """One training step (no host synchronisation): zero grads, forward + loss, backward, step.

    The returned callable takes an optional StageTimer, whose `backward` and `optimizer_step`
    regions it opens (forward regions come from the timer's hooks on `net`).
    """
    def step(timer: Any = None) -> None:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            out = net(inputs.rgb, inputs.spike)
        loss = loss_fn(out.float(), inputs.target.float())
        with _timer_region(timer, "backward"):
            if precision.scaler is not None:
                precision.scaler.scale(loss).backward()
            else:
                loss.backward()
        with _timer_region(timer, "optimizer_step"):
            if precision.scaler is not None:
                precision.scaler.step(optimizer)
                precision.scaler.update()
            else:
                optimizer.step()
    return step


def make_infer_step(net: Callable[..., Tensor], inputs: Inputs, precision: Precision) -> Callable[[], None]:
    """One inference forward under `torch.no_grad` (not `inference_mode`: tensors a model caches
    during inference, such as attention masks, must stay usable in training)."""
    def infer() -> None:
        with torch.no_grad(), precision.autocast():
            net(inputs.rgb, inputs.spike)
    return infer


def stage_breakdown(net: nn.Module, step: Callable[[Any], None], spec: BenchSpec
                    ) -> list[RegionStats]:
    """Per-region statistics over `spec.breakdown_steps` steps with a StageTimer attached
    (`vrt_spike.timing`'s summary: median, share of the step, exclusive time)."""
    if spec.breakdown_steps == 0:
        return []
    timer = StageTimer(device=spec.device, enabled=True)
    timer.attach(net)
    try:
        for _ in range(spec.breakdown_steps):
            step(timer)
            timer.end_step()
        rows = timer.collect()
    finally:
        timer.detach()
    return summarize(TimingRow(step=s, epoch=0, rank=0, region=r, ms=ms) for s, r, ms in rows)


def _count_then_time(eager: Callable[[], Any], timed: Callable[[], Any], spec: BenchSpec
                     ) -> tuple[FlopCount, Spread]:
    """FLOPs counted on one `eager` call, then `timed` warmed up and timed.

    Without compilation `eager is timed` and the counted call is the first warm-up call; a
    compiled `timed` gets all `spec.warmup` calls (compilation happens there)."""
    flops = count_flops(eager)
    warmup = max(spec.warmup - 1, 0) if eager is timed else spec.warmup
    return flops, Spread.of(time_callable(timed, warmup=warmup, iters=spec.iters,
                                          device=spec.device))


@dataclass(frozen=True)
class BenchResult:
    row: dict[str, Any]             # one results row (`results.FIELDS`)
    stages: list[RegionStats]       # per-stage breakdown (empty when bench.breakdown_steps=0)


def run_benchmark(net: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                  spec: BenchSpec, *, use_spike: bool, meta: Mapping[str, Any],
                  compile_mode: str | None = None) -> BenchResult:
    """Measure `net` (already on `spec.device`): one result row and the per-stage breakdown.

    `compile_mode` (a torch.compile mode, or None for eager) times the compiled `net`, static
    shapes as the LightningModule compiles it with `model.compile`;
    FLOPs are counted and the per-stage breakdown is taken on the eager `net` (the same
    arithmetic; compiled graphs would fuse across the timer's hooks).

    `meta` supplies the descriptive fields: label, overrides, model, optimizer, checkpointing,
    sweep_id, job_num.
    """
    precision = precision_setup(spec.precision, spec.device)
    if precision.dtype != torch.float32:
        net.to(precision.dtype)
    inputs = random_inputs(spec, precision.dtype, use_spike)
    memory = PeakMemory(spec.device)
    frames = spec.batch_size * spec.clip_len

    # Inference first, before gradients and optimizer state exist, so its peak is its own.
    compile = compile_mode is not None
    forward = torch.compile(net, mode=compile_mode, dynamic=False) if compile else net
    net.eval()
    infer = make_infer_step(net, inputs, precision)
    infer_timed = make_infer_step(forward, inputs, precision) if compile else infer
    memory.reset()
    infer_flops, infer_ms = _count_then_time(infer, infer_timed, spec)
    infer_mem = memory.read()

    net.train()
    step = make_train_step(net, optimizer, loss_fn, inputs, precision)
    step_timed = make_train_step(forward, optimizer, loss_fn, inputs, precision) if compile else step
    memory.reset()
    train_flops, train_ms = _count_then_time(step, step_timed, spec)
    train_mem = memory.read()
    # Last: on CUDA the timer resets the allocator's peak statistics at every region.
    stages = stage_breakdown(net, step, spec)

    compute_dtype = compute_dtype_for(spec.precision)
    peak = resolve_peak(spec.device, compute_dtype, spec.peak_tflops)
    train_s, infer_s = train_ms.median / 1e3, infer_ms.median / 1e3
    train_mfu = mfu(train_flops.total, train_s, peak.tflops)
    infer_mfu = mfu(infer_flops.total, infer_s, peak.tflops)
    row = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sweep_id": meta.get("sweep_id", ""),
        "job_num": meta.get("job_num", 0),
        "label": meta["label"],
        "overrides": meta.get("overrides", ""),
        "host": socket.gethostname(),
        "device": str(spec.device),
        "device_name": device_description(spec.device),
        "torch": torch.__version__,
        "model": meta["model"],
        "precision": spec.precision,
        "compute_dtype": compute_dtype,
        "optimizer": meta["optimizer"],
        "checkpointing": meta["checkpointing"],
        "compile": compile,
        "params": sum(p.numel() for p in net.parameters()),
        "batch_size": spec.batch_size,
        "clip_len": spec.clip_len,
        "crop_size": spec.crop_size,
        "num_bins": spec.num_bins,
        "warmup": spec.warmup,
        "iters": spec.iters,
        "train_step_ms_median": train_ms.median,
        "train_step_ms_p10": train_ms.p10,
        "train_step_ms_p90": train_ms.p90,
        "train_samples_per_s": spec.batch_size / train_s,
        "train_frames_per_s": frames / train_s,
        "infer_ms_median": infer_ms.median,
        "infer_ms_p10": infer_ms.p10,
        "infer_ms_p90": infer_ms.p90,
        "infer_samples_per_s": spec.batch_size / infer_s,
        "infer_frames_per_s": frames / infer_s,
        "train_peak_mem_mib": train_mem / MIB,
        "infer_peak_mem_mib": infer_mem / MIB,
        "mem_kind": memory.kind,
        "train_flops_per_step": train_flops.total,
        "train_deform_flops": sum(train_flops.by_op.get(op, 0) for op in deform_conv_op_names()),
        "infer_flops_per_forward": infer_flops.total,
        "train_tflops_per_s": train_flops.total / train_s / 1e12,
        "infer_tflops_per_s": infer_flops.total / infer_s / 1e12,
        "peak_tflops": peak.tflops,
        "peak_source": peak.source,
        "train_mfu": train_mfu,
        "infer_mfu": infer_mfu,
        "stage_ms": {st.region: st.p50_ms for st in stages},
    }
    return BenchResult(row=row, stages=stages)


def print_report(result: BenchResult, top_n: int = 12) -> str:
    """Print the summary table and the StageTimer's top regions; returns the plain text."""
    row = result.row
    tables = [summary_table(row)]
    if result.stages:
        steps = next(st.n for st in result.stages if st.region == "step")
        tables.append(render_table(steps, result.stages, top_n,
                                   samples_per_s=row["train_samples_per_s"], mfu=row["train_mfu"]))
    text = render_text(*tables)
    print(text, end="", flush=True)
    return text


# ----------------------------------------------------------------------------------------------
# Comparison of several rows (multirun end, or `bench.compare=<file|dir>`)

def rows_under(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a `.jsonl` file, or of every `bench.jsonl` under a (sweep) directory ordered by
    job number."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("bench.jsonl"))
        if not files:
            raise FileNotFoundError(f"{path}: no bench.jsonl under this directory")
        rows = [r for f in files for r in read_jsonl(f)]
        return sorted(rows, key=lambda r: int(r["job_num"]))
    if not path.exists():
        raise FileNotFoundError(f"bench.compare: {path} does not exist")
    return read_jsonl(path)


def write_comparison(rows: list[dict[str, Any]], out_dir: Path | None) -> str:
    """Print the comparison table of `rows` (first = baseline); write it to
    `out_dir/comparison.{txt,csv}` when given. Returns the text."""
    comparisons = compare_rows(rows)
    kinds = {r["mem_kind"] for r in rows}
    text = render_text(comparison_table(comparisons, "/".join(sorted(kinds))))
    print(text, end="", flush=True)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out_dir / "comparison.txt", text)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[f.name for f in dataclasses.fields(Comparison)])
        writer.writeheader()
        for c in comparisons:
            writer.writerow(dataclasses.asdict(c))
        write_text_atomically(out_dir / "comparison.csv", buf.getvalue())
    return text


# ----------------------------------------------------------------------------------------------
# Hydra entry point

def checkpointing_summary(model_cfg: Mapping[str, Any]) -> str:
    """Which activation-checkpoint switches of the model config are on (`off` when none):
    every boolean key whose name starts with `use_checkpoint`, as `vrt.use_checkpoint_attn+...`."""
    on: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                name = f"{prefix}{key}"
                if str(key).startswith("use_checkpoint") and isinstance(value, bool):
                    if value:
                        on.append(name)
                else:
                    walk(value, name + ".")

    walk(model_cfg, "")
    return "+".join(on) if on else "off"


def set_checkpointing(model_cfg: dict[str, Any], on: bool) -> dict[str, Any]:
    """A copy of `model_cfg` with every boolean `use_checkpoint*` switch set to `on` (the
    `no_checkpoint_*_blocks` exceptions of VRT stay as configured)."""
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (on if str(k).startswith("use_checkpoint") and isinstance(v, bool)
                        else walk(v)) for k, v in node.items()}
        return node
    return walk(model_cfg)


# bench.* keys that do not change what is measured, left out of a row's label.
_LABEL_EXCLUDED = ("hydra.", "bench.out", "bench.warmup", "bench.iters", "bench.breakdown_steps",
                   "bench.compare", "bench.seed", "bench.peak_tflops")


def model_config(cfg: Any) -> dict[str, Any]:
    """The resolved `model.*` config with `bench.checkpointing` (preset | on | off) applied."""
    from omegaconf import OmegaConf

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    mode = str(cfg.bench.get("checkpointing", "preset"))
    if mode == "preset":
        return model_cfg
    if mode not in ("on", "off"):
        raise ValueError(f"bench.checkpointing: expected preset, on or off, got {mode!r}")
    return set_checkpointing(model_cfg, mode == "on")


def _hydra_meta(cfg: Any, model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    choices = hc.runtime.choices
    # The label names the configuration: overrides of the model, optimizer, precision, shape.
    overrides = [o for o in hc.overrides.task if not o.lstrip("+~").startswith(_LABEL_EXCLUDED)]
    multirun = hc.mode == RunMode.MULTIRUN
    return {
        "label": " ".join(overrides) if overrides else f"model={choices.get('model')}",
        "overrides": " ".join(hc.overrides.task),
        "model": choices.get("model"),
        "optimizer": choices.get("optim"),
        "checkpointing": checkpointing_summary(model_cfg),
        "compile": bool(model_cfg.get("compile", False)),
        "sweep_id": str(Path(hc.sweep.dir).resolve()) if multirun else "",
        "job_num": int(hc.job.num) if multirun else 0,
        "run_dir": hc.runtime.output_dir,
    }


def bench_main(cfg: Any) -> float | None:
    """Run one benchmark configuration (or, with `bench.compare`, compare stored rows).

    Returns the median training step time in ms (a sweeper objective), None in compare mode.
    """
    b = cfg.bench
    if b.get("compare"):
        write_comparison(rows_under(b.compare), out_dir=None)
        return None
    from vrt_spike.lit.config import check_config
    from vrt_spike.lit.losses import CharbonnierLoss
    from vrt_spike.lit.module import build_net
    from vrt_spike.lit.optim import build_optimizer
    from vrt_spike.lit.run import set_tf32

    check_config(cfg)
    set_tf32(cfg.get("tf32", True))
    model_cfg = model_config(cfg)
    if b.get("optimizer_figures"):
        from hydra.core.hydra_config import HydraConfig

        from vrt_spike.lit.optim import OPTIMIZERS

        hc = HydraConfig.get()
        rows = optimizer_figures(model_cfg, {name: shipped_optim_config(name) for name in OPTIMIZERS},
                                 model=hc.runtime.choices.get("model"), device=resolve_device(str(b.device)),
                                 warmup=max(int(b.warmup), 1), iters=int(b.iters), seed=int(b.seed))
        print(write_figures(Path(hc.runtime.output_dir), rows), end="", flush=True)
        return None
    meta = _hydra_meta(cfg, model_cfg)
    spec = BenchSpec(
        batch_size=int(cfg.data.batch_size), clip_len=int(cfg.data.clip_len),
        crop_size=int(cfg.data.crop_size), num_bins=int(cfg.data.num_bins),
        warmup=int(b.warmup), iters=int(b.iters),
        breakdown_steps=int(b.breakdown_steps), precision=str(cfg.trainer.precision),
        device=resolve_device(str(b.device)),
        peak_tflops=None if b.peak_tflops is None else float(b.peak_tflops),
    )
    torch.manual_seed(int(b.seed))
    net = build_net(model_cfg).to(spec.device)
    optimizer = build_optimizer(net, cfg.optim)
    use_spike = bool(cfg.model.get("use_spike", True))
    result = run_benchmark(net, optimizer, CharbonnierLoss(), spec, use_spike=use_spike,
                           meta=meta, compile_mode=str(model_cfg.get("compile_mode", "default")) if meta["compile"] else None)
    print_report(result)
    row = result.row
    run_dir = Path(meta["run_dir"])
    append_row(run_dir / "bench.csv", row)
    csv_path, jsonl_path = append_row(b.out, row)
    log.info("appended to %s and %s (and %s)", csv_path, jsonl_path, run_dir / "bench.csv")
    return float(row["train_step_ms_median"])


# ----------------------------------------------------------------------------------------------
# Optimizer figures (`bench.optimizer_figures=true`)

OPTIMIZER_FIGURES = "optimizer_figures"  # <dir>/optimizer_figures.{csv,md}


def shipped_optim_config(name: str) -> dict[str, Any]:
    """The `optim=<name>` group as Hydra composes it for the bench (its defaults list applied).

    Needs an initialised Hydra (inside `python -m vrt_spike.bench`, or `initialize_config_dir`)."""
    from hydra import compose
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose("bench", overrides=[f"optim={name}"]).optim, resolve=True)


def write_figures(out_dir: Path, rows: list[dict[str, Any]]) -> str:
    """`<out_dir>/optimizer_figures.{csv,md}` (atomically); returns the markdown table."""
    from vrt_spike.profiling.optimizer import FIGURE_COLUMNS, figures_text

    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIGURE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(out_dir / f"{OPTIMIZER_FIGURES}.csv", buf.getvalue())
    text = figures_text(rows)
    write_text_atomically(out_dir / f"{OPTIMIZER_FIGURES}.md", text)
    return text


def optimizer_figures(model_cfg: Mapping[str, Any], optim_cfgs: Mapping[str, Mapping[str, Any]], *,
                      model: str, device: torch.device, warmup: int, iters: int, seed: int) -> list[dict[str, Any]]:
    """Optimizer-state memory and optimizer-step time of each optimizer config in `optim_cfgs`
    (name -> `optim.*`) on a fresh network of `model_cfg` (named `model` in the rows)."""
    from vrt_spike.lit.module import build_net
    from vrt_spike.profiling.optimizer import figures_row, measure_optimizer

    rows = []
    for optim_cfg in optim_cfgs.values():
        torch.manual_seed(seed)
        net = build_net(model_cfg).to(device)
        rows.append(figures_row(model, measure_optimizer(net, optim_cfg, warmup=warmup, iters=iters, seed=seed)))
        del net
    return rows


class CompareCallback(Callback):
    """Hydra callback (`hydra.callbacks` in conf/bench.yaml): after a multirun, print and write
    `<sweep dir>/comparison.{txt,csv}` from the jobs' `bench.jsonl` rows, ordered by job number
    (job 0 is the baseline); with `bench.optimizer_figures=true`, the jobs' optimizer figures in
    one table, `<sweep dir>/optimizer_figures.{csv,md}`."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            raise FileNotFoundError(f"hydra.sweep.dir {sweep_dir} does not exist after the sweep")
        if config.bench.get("optimizer_figures"):
            files = sorted(sweep_dir.glob(f"*/{OPTIMIZER_FIGURES}.csv"), key=lambda f: int(f.parent.name))
            if not files:
                raise FileNotFoundError(f"{sweep_dir}: no */{OPTIMIZER_FIGURES}.csv after the sweep")
            rows = []
            for f in files:
                with f.open(newline="") as handle:
                    rows += list(csv.DictReader(handle))
            print(write_figures(sweep_dir, rows), end="", flush=True)
            return
        write_comparison(rows_under(sweep_dir), out_dir=sweep_dir)


def main() -> None:
    import hydra

    import vrt_spike.lit  # noqa: F401  (registers the resolvers conf/ uses)

    hydra.main(version_base="1.3", config_path="../conf", config_name="bench")(bench_main)()


if __name__ == "__main__":
    main()
