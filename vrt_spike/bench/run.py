"""The benchmark of one configuration (`python -m vrt_spike.bench`, whose `__main__` runs
`bench_main`): step time, samples/s, memory, FLOPs/MFU and per-stage times of a preset.

    python -m vrt_spike.bench model=fast data.crop_size=256 data.clip_len=6 data.batch_size=1
    python -m vrt_spike.bench -m model=baseline,opt,fast trainer.precision=32,bf16-mixed
    python -m vrt_spike.bench bench.compare=benchmarks/results.jsonl
    python -m vrt_spike.bench -m model=fast,opt,baseline bench.optimizer_figures=true

`conf/bench.yaml` is `conf/train.yaml` plus `bench.*`, so every training key and preset applies.
Random inputs (no dataset): one batch of `data.batch_size` x `data.clip_len` frames of
`data.crop_size`^2 with `data.num_bins` spike channels, kept on `bench.device`. Per configuration:

- training (`measure_training`): train.py's own step, `vrt_spike.lit.training.train` on the composed
  config with that batch (`vrt_spike.bench.step_measure`): the LightningModule's `training_step`, the
  optimizer `configure_optimizers` builds, Lightning's precision plugin, `model.compile`, the shipped
  TimingCallback. `bench.warmup` untimed steps (the first one under the FLOP counter, the last
  one, when there are two or more, under the profiler for the operators and kernels per step),
  then `bench.iters` timed ones, each from the end of the step before to the end of its own (the
  TimingCallback's step, as in every run); peak memory over the timed steps; with
  `bench.breakdown`, the TimingCallback's per-stage table of the timed steps (without it, the step
  alone: the breakdown's cost is `-m bench.breakdown=false,true`);
- inference (`measure_inference`, unless `bench.inference=false`): the LightningModule's forward
  under `torch.no_grad` and the same precision plugin, FLOPs of one forward, `bench.warmup`
  untimed and `bench.iters` timed calls;
- MFU of both against the device's dense peak (`vrt_spike.bench.peaks`).

One row per configuration (`vrt_spike.bench.results.FIELDS`, named `bench.label` or after its
overrides) is appended to `bench.out` (CSV) and its `.jsonl` sibling, and to `bench.csv` /
`bench.jsonl` in the Hydra run dir. A configuration that runs out of memory (its memory plan
refusing it included) or fails still appends its row, `status` saying why, then raises. A
multirun (`-m`) ends with a comparison table (speedup and memory saving against the first
configuration) printed and written to `<sweep dir>/comparison.{md,csv}` by `CompareCallback`.

`bench.optimizer_figures=true` measures instead the optimizer-state memory and optimizer-step time
of every optimizer group (AdamW, 8-bit AdamW) on the preset's network
(`vrt_spike.bench.optimizer`), into `optimizer_figures.{csv,md}` of the run (one table over
the jobs of a multirun in the sweep dir).
"""
from __future__ import annotations

import copy
import logging
import platform
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from vrt_spike.atomic import write_text_atomically
from vrt_spike.bench.flops import count_flops, deform_conv_op_names
from vrt_spike.bench.peaks import compute_dtype_for, mfu, resolve_peak
from vrt_spike.bench.report import COMPARISON_COLUMNS, compare_rows, comparison_table, summary_table
from vrt_spike.bench.results import append_row, read_jsonl, unmeasured_row
from vrt_spike.lit.config import checkpointing_summary, set_checkpointing
from vrt_spike.tables import read_csv, write_csv
from vrt_spike.timing.clock import Spread, time_callable
from vrt_spike.timing.console import top_regions
from vrt_spike.timing.memory import PeakMemory, storage_bytes
from vrt_spike.timing.table import RegionStats

log = logging.getLogger(__name__)

MIB = 1024 * 1024


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


def on_device(cfg: DictConfig, device: torch.device) -> DictConfig:
    """A copy of `cfg` whose trainer runs on `device` (one device)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.trainer.accelerator = "gpu" if device.type == "cuda" else device.type
        cfg.trainer.devices = [device.index or 0] if device.type == "cuda" else 1
        cfg.trainer.strategy = "auto"
    return cfg


@dataclass(frozen=True)
class TrainFigures:
    """The measured fit's figures: the TimingCallback's step times and per-stage table, the
    StepProbe's FLOPs, memory, operator counts and warm-up time."""

    step_ms: Spread
    flops: int
    deform_flops: int
    peak_bytes: int
    mem_kind: str
    stages: list[RegionStats]  # the TimingCallback's summary (only `step` with bench.breakdown=false)
    planned_bytes: int | None = None  # the fit's memory plan (memory.check=false: none)
    warmup_s: float | None = None
    ops_per_step: int | None = None  # counted on the last warm-up step (bench.warmup >= 2)
    kernels_per_step: int | None = None
    optimizer: str | None = None  # what ran, e.g. "AdamW (fused)"
    params: int | None = None  # the network's parameters


def measure_training(cfg: DictConfig, run_dir: Path, model: Mapping[str, Any] | None = None) -> TrainFigures:
    """Train.py's own training step on one fixed random batch: `vrt_spike.lit.training.train` on `cfg`
    (a composed `conf/bench.yaml`, i.e. `conf/train.yaml` plus `bench.*`) through
    `vrt_spike.bench.step_measure.fixed_batch_config`, so the LightningModule's `training_step`, the
    optimizer of `configure_optimizers` (`build_optimizer`), Lightning's precision plugin, compile
    and the shipped TimingCallback run as in training.

    `bench.warmup` untimed steps (at least 1: the first one counts the FLOPs; with 2 or more the
    last one counts operators and kernels), then `bench.iters` timed ones; `bench.breakdown`: the
    TimingCallback's per-region breakdown (else it times the step alone); `bench.callbacks` (name
    -> callback config) join the fit. `model`: the resolved `model.*` to run (`bench.checkpointing`
    applied); the fit writes under `run_dir`.
    """
    from vrt_spike.bench.step_measure import fixed_batch_config, read_probe
    from vrt_spike.lit.training import train
    from vrt_spike.timing.table import read_summary

    b = cfg.bench
    iters, warmup = int(b.iters), max(int(b.warmup), 1)
    if iters < 1:
        raise ValueError(f"bench.iters must be >= 1, got {iters!r}")
    if int(b.warmup) < 0:
        raise ValueError(f"bench.warmup must be >= 0, got {b.warmup!r}")
    extra = OmegaConf.to_container(b.callbacks, resolve=True) if b.get("callbacks") else {}
    fit = fixed_batch_config(cfg, run_dir=run_dir, warmup=warmup, steps=iters, breakdown=bool(b.breakdown),
                             count_flops=True, count_ops=warmup >= 2, model=model, callbacks=extra)
    train(fit)
    probe, stages = read_probe(run_dir), read_summary(run_dir)
    step = next(s for s in stages if s.region == "step")
    if step.n != iters:
        raise RuntimeError(f"{run_dir}: the measured fit timed {step.n} steps, bench.iters={iters}")
    return TrainFigures(
        step_ms=Spread(median=step.p50_ms, p10=step.p10_ms, p90=step.p90_ms, n=step.n),
        flops=int(probe["flops_per_step"]),
        deform_flops=sum(probe["flops_by_op"].get(op, 0) for op in deform_conv_op_names()),
        peak_bytes=int(probe["peak_bytes"]), mem_kind=probe["mem_kind"], stages=stages,
        planned_bytes=probe["planned_peak_bytes"], warmup_s=probe["warmup_s"], ops_per_step=probe["ops_per_step"],
        kernels_per_step=probe["kernels_per_step"], optimizer=probe["optimizer"], params=probe["params"])


@dataclass(frozen=True)
class InferFigures:
    """One inference forward: time, FLOPs, peak memory, parameters."""

    ms: Spread
    flops: int
    peak_bytes: int
    params: int


def measure_inference(cfg: DictConfig, device: torch.device, model: Mapping[str, Any] | None = None) -> InferFigures:
    """The LightningModule's forward (the network, as `restore` runs it per window) under
    `torch.no_grad` on one random batch of the training shape, with Lightning's precision plugin of
    `cfg.trainer` (its module and input conversion and its forward context) and the module compiled
    as `model.compile` says. Not `inference_mode`: tensors a model caches during inference, such as
    attention masks, must stay usable in training.

    FLOPs are counted on one eager call (`force_eager`: a compiled graph hides its ops from the
    counter), which is the first of `bench.warmup` untimed calls when not compiled; then
    `bench.iters` timed calls.
    """
    import hydra

    from vrt_spike.bench.step_measure import FixedBatchDataModule
    from vrt_spike.lit.module import DeblurModule

    b = cfg.bench
    model = model if model is not None else cfg.model
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_progress_bar=False,
                                      enable_model_summary=False, enable_checkpointing=False,
                                      default_root_dir=None)
    plugin = trainer.precision_plugin
    module = DeblurModule(model=model, optim=cfg.optim, loss=cfg.loss, **cfg.get("module", {}))
    module = plugin.convert_module(module).to(device).eval()
    batch = plugin.convert_input(FixedBatchDataModule(steps=1, **cfg.data).make_batch(device))

    def forward() -> None:
        with torch.no_grad(), plugin.forward_context():
            module(batch["blur"], batch["spike"])

    memory = PeakMemory(device)
    memory.reset()
    live = storage_bytes([*module.parameters(), *module.buffers(), *batch.values()])
    with torch.compiler.set_stance("force_eager"):
        flops = count_flops(forward)
    compiled = bool(model.get("compile", False))
    warmup = int(b.warmup) if compiled else max(int(b.warmup) - 1, 0)
    ms = Spread.of(time_callable(forward, warmup=warmup, iters=int(b.iters), device=device))
    return InferFigures(ms=ms, flops=flops.total, peak_bytes=memory.tensors_peak(live),
                        params=sum(p.numel() for p in module.net.parameters()))


def config_columns(meta: Mapping[str, Any], shape: Mapping[str, int], *, device: torch.device,
                   precision: str) -> dict[str, Any]:
    """The row's columns that describe the configuration (known before anything runs)."""
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sweep_id": meta.get("sweep_id", ""), "job_num": meta.get("job_num", 0), "label": meta["label"],
        "overrides": meta.get("overrides", ""), "host": socket.gethostname(), "device": str(device),
        "device_name": device_description(device), "torch": torch.__version__, "model": meta["model"],
        "precision": precision, "compute_dtype": compute_dtype_for(precision), "optimizer": meta["optimizer"],
        "checkpointing": meta["checkpointing"], "compile": bool(meta["compile"]),
        **{k: shape[k] for k in ("batch_size", "clip_len", "crop_size", "num_bins")},
    }


def make_row(meta: Mapping[str, Any], shape: Mapping[str, int], *, device: torch.device, precision: str,
             warmup: int, train: TrainFigures, infer: InferFigures | None,
             peak_tflops: float | None = None) -> dict[str, Any]:
    """One results row (`vrt_spike.bench.results.FIELDS`, status ok) from the measured figures.

    `meta`: label, model, optimizer (the `optim` group; the row names the optimizer that ran),
    checkpointing, compile and optionally overrides, sweep_id, job_num; `shape`: batch_size, clip_len, crop_size, num_bins; `infer`: None when not measured.
    Throughput and MFU use the median step; MFU's peak is the device's dense peak for the
    precision's compute type, or `peak_tflops`.
    """
    row = unmeasured_row("ok", **config_columns(meta, shape, device=device, precision=precision))
    peak = resolve_peak(device, row["compute_dtype"], peak_tflops)
    b, frames = shape["batch_size"], shape["batch_size"] * shape["clip_len"]
    train_s = train.step_ms.median / 1e3
    row.update({
        "warmup": warmup, "iters": train.step_ms.n, "warmup_s": train.warmup_s,
        "train_step_ms_median": train.step_ms.median, "train_step_ms_p10": train.step_ms.p10,
        "train_step_ms_p90": train.step_ms.p90, "train_samples_per_s": b / train_s,
        "train_frames_per_s": frames / train_s, "train_peak_mem_mib": train.peak_bytes / MIB,
        "train_planned_mem_mib": None if train.planned_bytes is None else train.planned_bytes / MIB,
        "mem_kind": train.mem_kind, "train_flops_per_step": train.flops, "train_deform_flops": train.deform_flops,
        "train_tflops_per_s": train.flops / train_s / 1e12, "peak_tflops": peak.tflops, "peak_source": peak.source,
        "train_mfu": mfu(train.flops, train_s, peak.tflops), "ops_per_step": train.ops_per_step,
        "kernels_per_step": train.kernels_per_step, "optimizer": train.optimizer or row["optimizer"],
        "params": train.params,
        "top_regions": "; ".join(f"{s.region} {s.self_ms:.1f}" for s in top_regions(train.stages, 3)) or None,
        "stage_ms": {st.region: st.p50_ms for st in train.stages},
    })
    if infer is not None:
        infer_s = infer.ms.median / 1e3
        row.update({
            "infer_ms_median": infer.ms.median, "infer_ms_p10": infer.ms.p10,
            "infer_ms_p90": infer.ms.p90, "infer_samples_per_s": b / infer_s, "infer_frames_per_s": frames / infer_s,
            "infer_peak_mem_mib": infer.peak_bytes / MIB, "infer_flops_per_forward": infer.flops,
            "infer_tflops_per_s": infer.flops / infer_s / 1e12, "infer_mfu": mfu(infer.flops, infer_s, peak.tflops),
        })
    return row


def failure(err: BaseException) -> str:
    """A row's status for an exception: `oom: ...` (out of memory, or the memory plan refusing the
    step before it started: `MemoryPlanError`) or `failed: <type>: ...`, one line."""
    seen: BaseException | None = err
    while seen is not None:
        if type(seen).__name__ in ("OutOfMemoryError", "MemoryPlanError") or "out of memory" in str(seen).lower():
            return f"oom: {type(seen).__name__}: {str(seen).splitlines()[0][:160] if str(seen) else ''}"
        seen = seen.__cause__ or seen.__context__
    return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"


def print_report(row: Mapping[str, Any]) -> str:
    """Print the row's summary (the fit printed its timing profile); returns the text."""
    text = summary_table(row)
    print(text, end="", flush=True)
    return text


# ----------------------------------------------------------------------------------------------
# Comparison of several rows (multirun end, `bench.compare=<file|dir>`, the GPU ladder)

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
    """Print the comparison table of `rows` (the first measured one is the baseline); write it to
    `out_dir/comparison.{md,csv}` when given. Returns the text."""
    kinds = "/".join(sorted({str(r["mem_kind"]) for r in rows if r.get("mem_kind")})) or "n/a"
    text = (f"comparison against the first configuration ({rows[0]['label']}); peak memory as {kinds}\n\n"
            f"{comparison_table(rows)}\n")
    print(text, end="", flush=True)
    if out_dir is not None:
        write_text_atomically(out_dir / "comparison.md", text)
        write_csv(out_dir / "comparison.csv", COMPARISON_COLUMNS, compare_rows(rows))
    return text


# ----------------------------------------------------------------------------------------------
# Hydra entry point

# bench.* keys that do not change what is measured, left out of a row's label.
_LABEL_EXCLUDED = ("hydra.", "bench.out", "bench.warmup", "bench.iters", "bench.callbacks",
                   "bench.compare", "bench.peak_tflops", "bench.label", "bench.inference", "seed")


def model_config(cfg: Any) -> dict[str, Any]:
    """The resolved `model.*` config with `bench.checkpointing` (preset | on | off) applied."""
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
    # The label names the configuration: `bench.label`, or the overrides of the model, optimizer,
    # precision, shape.
    overrides = [o for o in hc.overrides.task if not o.lstrip("+~").startswith(_LABEL_EXCLUDED)]
    multirun = hc.mode == RunMode.MULTIRUN
    label = cfg.bench.get("label") or (" ".join(overrides) if overrides else f"model={choices.get('model')}")
    return {
        "label": str(label),
        "overrides": " ".join(hc.overrides.task),
        "model": choices.get("model"),
        "optimizer": choices.get("optim"),
        "checkpointing": checkpointing_summary(model_cfg),
        "compile": bool(model_cfg.get("compile", False)),
        "sweep_id": str(Path(hc.sweep.dir).resolve()) if multirun else "",
        "job_num": int(hc.job.num) if multirun else 0,
        "run_dir": hc.runtime.output_dir,
    }


def _append(b: Any, run_dir: Path, row: Mapping[str, Any]) -> None:
    append_row(run_dir / "bench.csv", row)
    csv_path, jsonl_path = append_row(b.out, row)
    log.info("appended to %s and %s (and %s)", csv_path, jsonl_path, run_dir / "bench.csv")


def bench_main(cfg: DictConfig) -> float | None:
    """Run one benchmark configuration (or, with `bench.compare`, compare stored rows).

    Returns the median training step time in ms (a sweeper objective), None in compare mode.
    """
    b = cfg.bench
    if b.get("compare"):
        write_comparison(rows_under(b.compare), out_dir=None)
        return None
    from vrt_spike.lit.config import check_config
    from vrt_spike.lit.runtime import set_tf32

    check_config(cfg)
    set_tf32(cfg.get("tf32", True))
    model_cfg = model_config(cfg)
    device = resolve_device(str(b.device))
    if b.get("optimizer_figures"):
        from hydra.core.hydra_config import HydraConfig

        from vrt_spike.lit.optim import OPTIMIZERS

        hc = HydraConfig.get()
        rows = optimizer_figures(model_cfg, {name: shipped_optim_config(name) for name in OPTIMIZERS},
                                 model=hc.runtime.choices.get("model"), device=device,
                                 warmup=max(int(b.warmup), 1), iters=int(b.iters), seed=int(cfg.seed))
        print(write_figures(Path(hc.runtime.output_dir), rows), end="", flush=True)
        return None
    meta = _hydra_meta(cfg, model_cfg)
    run_dir = Path(meta["run_dir"])
    cfg = on_device(cfg, device)
    shape = {k: int(cfg.data[k]) for k in ("batch_size", "clip_len", "crop_size", "num_bins")}
    precision = str(cfg.trainer.precision)
    try:
        # Inference first, before gradients and optimizer states exist, so that its peak is its own.
        infer = measure_inference(cfg, device, model=model_cfg) if b.get("inference", True) else None
        train = measure_training(cfg, run_dir / "fit", model=model_cfg)
    except Exception as err:  # the row says why; the error still ends the run
        _append(b, run_dir, unmeasured_row(failure(err), **config_columns(meta, shape, device=device,
                                                                            precision=precision)))
        raise
    row = make_row(meta, shape, device=device, precision=precision, warmup=int(b.warmup), train=train, infer=infer,
                   peak_tflops=None if b.peak_tflops is None else float(b.peak_tflops))
    print_report(row)
    _append(b, run_dir, row)
    return float(row["train_step_ms_median"])


# ----------------------------------------------------------------------------------------------
# Optimizer figures (`bench.optimizer_figures=true`)

OPTIMIZER_FIGURES = "optimizer_figures"  # <dir>/optimizer_figures.{csv,md}


def shipped_optim_config(name: str) -> dict[str, Any]:
    """The `optim=<name>` group as Hydra composes it for the bench (its defaults list applied).

    Needs an initialised Hydra (inside `python -m vrt_spike.bench`, or `initialize_config_dir`)."""
    from hydra import compose

    return OmegaConf.to_container(compose("bench", overrides=[f"optim={name}"]).optim, resolve=True)


def write_figures(out_dir: Path, rows: list[dict[str, Any]]) -> str:
    """`<out_dir>/optimizer_figures.{csv,md}` (atomically); returns the markdown table."""
    from vrt_spike.bench.optimizer import FIGURE_COLUMNS, figures_text

    write_csv(out_dir / f"{OPTIMIZER_FIGURES}.csv", FIGURE_COLUMNS, rows)
    text = figures_text(rows)
    write_text_atomically(out_dir / f"{OPTIMIZER_FIGURES}.md", text)
    return text


def optimizer_figures(model_cfg: Mapping[str, Any], optim_cfgs: Mapping[str, Mapping[str, Any]], *,
                      model: str, device: torch.device, warmup: int, iters: int, seed: int) -> list[dict[str, Any]]:
    """Optimizer-state memory and optimizer-step time of each optimizer config in `optim_cfgs`
    (name -> `optim.*`) on a fresh network of `model_cfg` (named `model` in the rows)."""
    from vrt_spike.bench.optimizer import figures_row, measure_optimizer
    from vrt_spike.lit.module import build_net

    rows = []
    for optim_cfg in optim_cfgs.values():
        torch.manual_seed(seed)
        net = build_net(model_cfg).to(device)
        rows.append(figures_row(model, measure_optimizer(net, optim_cfg, warmup=warmup, iters=iters, seed=seed)))
        del net
    return rows


class CompareCallback(Callback):
    """Hydra callback (`hydra.callbacks` in conf/bench.yaml): after a multirun, print and write
    `<sweep dir>/comparison.{md,csv}` from the jobs' `bench.jsonl` rows, ordered by job number
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
            print(write_figures(sweep_dir, [r for f in files for r in read_csv(f)]), end="", flush=True)
            return
        write_comparison(rows_under(sweep_dir), out_dir=sweep_dir)
