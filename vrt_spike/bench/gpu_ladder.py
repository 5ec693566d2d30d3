"""The users' training-speed ladder on one GPU, in one shot: a plan of override sets, each rung one
run of the bench (`python -m vrt_spike.bench <overrides>`), one table.

    python -m vrt_spike.bench.gpu_ladder [--out PATH.csv] [--budget 450] [--skip-compile] [override ...]
    python -m vrt_spike.bench.gpu_ladder --smoke    # tiny sizes on the CPU (CI)
    bash benchmarks/gpu_ladder.sh                   # on a bare GPU box (wheels, then pytest -m cuda)

Rungs, each adding one switch to the one before, at clip 6 and 256^2 (192^2 for a rung that runs
out of memory at 256^2, its memory plan refusing it included):

    baseline           model=baseline, fp32 (TF32 matmuls as the config's `tf32` says), torch AdamW
                       without the fused kernel (optim.fused=false), batch 1, bench.checkpointing=on
    +bf16              trainer.precision=bf16-mixed
    +fused-adamw       optim=adamw as shipped (fused)                } the faster of the two
    +adamw8bit         optim=adamw8bit (bitsandbytes)                } goes on up the ladder
    +batch             data.batch_size=3
    -checkpointing     bench.checkpointing=off (every model use_checkpoint* switch)
    +compile           model.compile=true (mode default)
    +reduce-overhead   model.compile_mode=reduce-overhead (CUDA graphs)
    opt@best, fast@best  model=opt and model=fast with the switches of the rung with the most samples/s

A rung is `python -m vrt_spike.bench <overrides> bench.label=<rung> bench.inference=false
bench.out=<--out>` in its own subprocess with a time limit (an out-of-memory or a hung compilation
takes only its rung down): the bench writes the rung's row of `vrt_spike.bench.results.FIELDS`
itself, an out-of-memory row too; a rung stopped or skipped gets a row saying why. `<stem>.md` is
the bench's comparison table (speedup against `baseline`), the plan's notes and the optimizer table
of a `bench.optimizer_figures=true` multirun (`<stem>_optimizers.csv`). One inductor cache for
all rungs. The budget (`--budget`): a rung's limit is its kind's cap or what is left, and it starts
only when enough is left; the compile rungs run in what two eager rungs for `opt@best` and
`fast@best` leave, and those take the best eager rung's switches when another compilation does not
fit. A crop at which a rung of the same preset needing no more memory ran out is not tried again.

Output: `--out` (default `$OUT/gpu_ladder.csv`, else `benchmarks/gpu_ladder.csv`), its `.jsonl`,
`<stem>_optimizers.csv` and `<stem>.md`; per-rung logs and run dirs in `--work-dir` (default a temp
dir). `--smoke`: the same plan with `model=tiny` at 48^2 (then 40^2), clip 2, 2 timed steps, on the CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrt_spike import PROJECT_ROOT
from vrt_spike.atomic import write_text_atomically
from vrt_spike.bench.report import comparison_table
from vrt_spike.bench.results import append_row, jsonl_path_for, read_jsonl, unmeasured_row
from vrt_spike.timing.clock import now_s

log = logging.getLogger("gpu_ladder")

LADDER = ("baseline", "+bf16", "+fused-adamw", "+adamw8bit", "+batch", "-checkpointing", "+compile",
          "+reduce-overhead", "opt@best", "fast@best")
COMPILE_RUNGS = ("+compile", "+reduce-overhead")
PRESETS = ("baseline", "opt", "fast")


@dataclass(frozen=True)
class Switches:
    """What a rung changes: the training keys the ladder turns."""

    precision: str = "32"
    optim: str = "adamw"
    fused: bool | None = False       # optim.fused; None: the group's default (auto: fused)
    batch_size: int = 1
    checkpointing: bool = True       # bench.checkpointing=on|off
    compile_mode: str | None = None  # None: eager; else model.compile=true in this mode

    @property
    def kind(self) -> str:
        """The budget class of a rung with these switches: eager, compile or reduce-overhead."""
        return "eager" if self.compile_mode is None else "reduce-overhead" if self.compile_mode == "reduce-overhead" else "compile"

    def overrides(self) -> list[str]:
        out = [f"trainer.precision={self.precision}", f"optim={self.optim}", f"data.batch_size={self.batch_size}",
               f"bench.checkpointing={'on' if self.checkpointing else 'off'}",
               f"model.compile={str(self.compile_mode is not None).lower()}"]
        if self.fused is not None:
            out.append(f"optim.fused={str(self.fused).lower()}")
        if self.compile_mode is not None:
            out.append(f"model.compile_mode={self.compile_mode}")
        return out

    def needs_at_least(self, other: Switches) -> bool:
        """Whether a step with these switches needs at least the memory of one with `other`: a batch
        as large, checkpointing off where `other` has it off, fp32 where `other` runs fp32
        (optimizer states and compilation move the peak by far less than the activations do)."""
        return (self.batch_size >= other.batch_size and (not self.checkpointing or other.checkpointing)
                and (self.precision == "32" or other.precision != "32"))


@dataclass(frozen=True)
class Profile:
    """Sizes, loop lengths and time budgets of one ladder (the GPU one or `--smoke`)."""

    device: str                          # cuda | cpu
    presets: Mapping[str, str]           # baseline / opt / fast -> the preset that runs
    clip_len: int
    crops: tuple[int, ...]               # tried in order; the next one after an out-of-memory
    batch: int                           # the `+batch` rung's batch size
    warmup: Mapping[str, int]            # per kind: untimed steps (FLOPs on the first, kernels on the last)
    iters: int                           # timed steps per rung
    budget_s: float                      # the whole ladder
    cap_s: Mapping[str, float]           # per kind (and `optimizers`): a rung's longest run
    min_start_s: Mapping[str, float]     # per kind: a rung starts only with this much budget left
    overrides: tuple[str, ...] = ()      # Hydra overrides for every rung and the optimizer table


GPU = Profile(
    device="cuda", presets={p: p for p in PRESETS}, clip_len=6, crops=(256, 192), batch=3,
    warmup={"eager": 2, "compile": 3, "reduce-overhead": 4}, iters=8, budget_s=450.0,
    cap_s={"optimizers": 60.0, "eager": 75.0, "compile": 240.0, "reduce-overhead": 150.0},
    min_start_s={"optimizers": 20.0, "eager": 25.0, "compile": 60.0, "reduce-overhead": 45.0},
)
SMOKE = Profile(
    device="cpu", presets={p: "tiny" for p in PRESETS}, clip_len=2, crops=(48, 40), batch=2,
    warmup={"eager": 2, "compile": 3, "reduce-overhead": 3}, iters=2, budget_s=1800.0,
    cap_s={"optimizers": 180.0, "eager": 300.0, "compile": 600.0, "reduce-overhead": 600.0},
    min_start_s={"optimizers": 10.0, "eager": 10.0, "compile": 30.0, "reduce-overhead": 30.0},
)

# Runs `python -m vrt_spike.bench` with the overrides, output to a log, within a time limit: None
# when it exited 0, else why not (the ladder's tests hand in a scripted one).
BenchRunner = Callable[[Sequence[str], Path, float, Mapping[str, str]], "str | None"]


def _last_line(log_path: Path) -> str:
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def run_bench(overrides: Sequence[str], log_path: Path, timeout_s: float, env: Mapping[str, str]) -> str | None:
    """`python -m vrt_spike.bench OVERRIDES` in its own session, stopped (with the compile workers
    it started, nothing else) after `timeout_s`."""
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vrt_spike.bench", *overrides], stdout=out,
                                stderr=subprocess.STDOUT, env=dict(env), start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return f"timeout: stopped after {timeout_s:.0f} s (log {log_path})"
    return None if code == 0 else f"exit code {code}: {_last_line(log_path)} (log {log_path})"


def bench_env(profile: Profile, work_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("WANDB_MODE", "offline")
    # One inductor cache for every rung (reduce-overhead reuses the default rung's kernels), and
    # every core compiling.
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(work_dir / "inductor_cache"))
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(os.cpu_count() or 1))
    if profile.device == "cpu":  # the CPU peak is the tensors' only with glibc's mmap threshold pinned (PeakMemory)
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "8192")
    return env


class Ladder:
    """Runs the rungs against one deadline; the rows are the `--out` table's, in ladder order."""

    def __init__(self, profile: Profile, work_dir: Path, out: Path, *, skip_compile: bool = False,
                 peak_tflops: float | None = None, run: BenchRunner = run_bench, clock: Callable[[], float] = now_s) -> None:
        self.profile, self.work_dir, self.out, self.run_bench, self.clock = profile, work_dir, out, run, clock
        self.skip_compile, self.peak_tflops = skip_compile, peak_tflops
        self.start = clock()
        self.env = bench_env(profile, work_dir)
        self.switches: dict[str, Switches] = {}
        self.rung_s: dict[str, float] = {}  # wall time of each rung's last run
        self.notes: list[str] = []
        self.optimizer_status = "not run"
        for stale in (out, jsonl_path_for(out)):  # a fresh table
            stale.unlink(missing_ok=True)

    @property
    def rows(self) -> list[dict[str, Any]]:
        path = jsonl_path_for(self.out)
        return read_jsonl(path) if path.is_file() else []

    def row(self, rung: str, ok: bool = False) -> dict[str, Any] | None:
        """The last row of `rung` (after an out-of-memory, its run at the next crop); `ok`: None unless it measured."""
        row = next((r for r in reversed(self.rows) if r["label"] == rung), None)
        return None if row is None or (ok and row["status"] != "ok") else row

    def left_s(self) -> float:
        return self.profile.budget_s - (self.clock() - self.start)

    def eager_estimate_s(self) -> float:
        """What an eager rung costs: the longest one so far (before any, the least an eager rung may start with)."""
        ran = [s for rung, s in self.rung_s.items() if self.switches[rung].kind == "eager"]
        return max(ran, default=self.profile.min_start_s["eager"])

    def _unmeasured(self, rung: str, preset: str, sw: Switches, crop: int, status: str) -> None:
        append_row(self.out, unmeasured_row(status, label=rung, model=preset, precision=sw.precision, optimizer=sw.optim,
                                            batch_size=sw.batch_size, clip_len=self.profile.clip_len, crop_size=crop,
                                            checkpointing="on" if sw.checkpointing else "off",
                                            compile=sw.compile_mode is not None, device=self.profile.device))

    def _bench(self, rung: str, preset: str, sw: Switches, crop: int, timeout_s: float) -> dict[str, Any]:
        """One run of the bench; its row (the bench's own, or one saying why it wrote none)."""
        p = self.profile
        run_dir = self.work_dir / "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{rung}-{crop}")
        run_dir.mkdir(parents=True, exist_ok=True)
        overrides = [*p.overrides, f"model={preset}", f"bench.device={p.device}", f"data.clip_len={p.clip_len}",
                     f"data.crop_size={crop}", *sw.overrides(), f"bench.warmup={p.warmup[sw.kind]}",
                     f"bench.iters={p.iters}", "bench.inference=false", f"bench.label='{rung}'",
                     f"bench.out={self.out}", f"hydra.run.dir={run_dir}"]
        if self.peak_tflops is not None:
            overrides.append(f"bench.peak_tflops={self.peak_tflops}")
        before, t0 = len(self.rows), self.clock()
        problem = self.run_bench(overrides, run_dir / "bench.log", timeout_s, self.env)
        self.rung_s[rung] = self.clock() - t0
        if len(self.rows) == before:  # stopped, or died before it could write its row
            self._unmeasured(rung, preset, sw, crop, problem or "failed: the bench wrote no row")
        return self.rows[-1]

    def measure(self, rung: str, role: str, sw: Switches, reserve_s: float = 0.0) -> dict[str, Any] | None:
        """Measure a rung, at the next crop after an out-of-memory; `reserve_s` of the budget is
        kept for the rungs after it. Returns its last row."""
        p, preset = self.profile, self.profile.presets[role]
        self.switches[rung] = sw
        crops = list(p.crops)
        # A crop at which a rung of this preset needing no more memory ran out of memory is not tried.
        for other in self.rows:
            if (other["model"] == preset and str(other["status"]).startswith("oom") and len(crops) > 1
                    and other["crop_size"] == crops[0] and sw.needs_at_least(self.switches[other["label"]])):
                self.notes.append(f"{rung}: {crops.pop(0)}^2 not tried, {other['label']} ran out of memory there")
        for crop in crops:
            left = self.left_s() - reserve_s
            if left < p.min_start_s[sw.kind]:
                kept = f" after {reserve_s:.0f} s kept for opt@best and fast@best" if reserve_s else ""
                self._unmeasured(rung, preset, sw, crop, f"skipped: ladder budget: {max(left, 0):.0f} s left{kept}, "
                                                          f"a {sw.kind} rung needs >= {p.min_start_s[sw.kind]:.0f} s")
                break
            row = self._bench(rung, preset, sw, crop, timeout_s=min(p.cap_s[sw.kind], left))
            if not str(row["status"]).startswith("oom"):
                break
        last = self.row(rung)
        log.info("%s at %s^2: %s", rung, last["crop_size"], last["status"] if last["status"] != "ok" else
                 f"{last['train_samples_per_s']:.3f} samples/s, {last['train_step_ms_median']:.1f} ms/step, "
                 f"warm-up {last['warmup_s']:.1f} s")
        return last

    def _faster(self, rungs: Sequence[str]) -> Switches:
        """The switches of the rung with the most samples/s among `rungs` that ran (else the last)."""
        ran = [r for r in (self.row(n, ok=True) for n in rungs) if r is not None]
        return self.switches[max(ran, key=lambda r: r["train_samples_per_s"])["label"] if ran else rungs[-1]]

    def optimizer_table(self) -> None:
        """`<stem>_optimizers.csv`: the bench's optimizer figures of every preset, in one multirun."""
        p = self.profile
        left = self.left_s()
        if left < p.min_start_s["optimizers"]:
            self.optimizer_status = f"skipped: ladder budget: {left:.0f} s left"
            return
        sweep = self.work_dir / "optimizers"
        presets = ",".join(dict.fromkeys(p.presets.values()))
        problem = self.run_bench(["-m", *p.overrides, f"model={presets}", "bench.optimizer_figures=true",
                                  f"bench.device={p.device}", "bench.warmup=1", f"bench.iters={p.iters}",
                                  f"hydra.sweep.dir={sweep}"], self.work_dir / "optimizers.log",
                                 min(p.cap_s["optimizers"], left), self.env)
        if problem:
            self.optimizer_status = f"failed: {problem}"
            return
        write_text_atomically(self.out.with_name(f"{self.out.stem}_optimizers.csv"),
                              (sweep / "optimizer_figures.csv").read_text())
        self.optimizer_status = "ok"

    def run(self) -> None:
        self.optimizer_table()
        sw = Switches()
        self.measure("baseline", "baseline", sw)
        bf16 = dataclasses.replace(sw, precision="bf16-mixed")
        self.measure("+bf16", "baseline", bf16)
        self.measure("+fused-adamw", "baseline", dataclasses.replace(bf16, fused=None))
        self.measure("+adamw8bit", "baseline", dataclasses.replace(bf16, optim="adamw8bit", fused=None))
        sw = dataclasses.replace(self._faster(("+fused-adamw", "+adamw8bit", "+bf16")), batch_size=self.profile.batch)
        self.measure("+batch", "baseline", sw)
        sw = dataclasses.replace(sw, checkpointing=False)
        self.measure("-checkpointing", "baseline", sw)
        for rung, mode in zip(COMPILE_RUNGS, ("default", "reduce-overhead")):
            sw = dataclasses.replace(sw, compile_mode=mode)
            if self.skip_compile:
                self.switches[rung] = sw
                self._unmeasured(rung, self.profile.presets["baseline"], sw, self.profile.crops[0], "skipped: --skip-compile")
            else:  # compilations run only in the time that opt@best and fast@best do not need
                self.measure(rung, "baseline", sw, reserve_s=2 * self.eager_estimate_s())
        self._presets_at_best()

    def _presets_at_best(self) -> None:
        ran = [r for r in (self.row(n, ok=True) for n in LADDER[:8]) if r is not None]
        for role in ("opt", "fast"):
            rung = f"{role}@best"
            if not ran:
                self.switches[rung] = Switches()
                self._unmeasured(rung, self.profile.presets[role], Switches(), self.profile.crops[0],
                                 "skipped: no rung of the ladder ran")
                continue
            best = max(ran, key=lambda r: r["train_samples_per_s"])["label"]
            sw, note = self.switches[best], f"{rung}: the switches of {best}"
            if sw.kind != "eager":
                need = self.rung_s[best] * 1.2
                eager = [r for r in ran if self.switches[r["label"]].kind == "eager"]
                if self.left_s() < need + (self.eager_estimate_s() if role == "opt" else 0) and eager:
                    fallback = max(eager, key=lambda r: r["train_samples_per_s"])["label"]
                    note = (f"{rung}: the switches of {fallback}, the best eager rung: compiling {role} would need "
                            f"~{need:.0f} s, {self.left_s():.0f} s left")
                    sw = self.switches[fallback]
            self.notes.append(note)
            # A compiled opt@best leaves fast@best the time of an eager rung.
            self.measure(rung, role, sw, reserve_s=self.eager_estimate_s() if role == "opt" and sw.kind != "eager" else 0.0)

    def write_markdown(self) -> Path:
        """`<stem>.md`: the header, the bench's comparison table of the rungs, the notes, the optimizer table."""
        p, rows = self.profile, self.rows
        device = next((r["device_name"] for r in rows if r.get("device_name")), p.device)
        text = (f"GPU ladder on {device}, clip {p.clip_len}, crops {' then '.join(f'{c}^2' for c in p.crops)}; "
                f"{self.clock() - self.start:.0f} s of a {p.budget_s:.0f} s budget. train ms and samples/s: the timing "
                "callback's median step over the timed steps; peak MiB over the timed steps beside the memory plan; "
                "MFU = executed FLOPs per step (recomputation included) / step time / dense peak; top regions by "
                "exclusive ms per step; kernels/step of the last warm-up step; warm-up s includes compilation.\n\n"
                f"{comparison_table(rows) if rows else '(no rung ran)'}\n\n"
                + "".join(f"- {n}\n" for n in self.notes)
                + f"\nOptimizer state and step at each preset's size ({self.optimizer_status}):\n\n")
        optimizers = self.work_dir / "optimizers" / "optimizer_figures.md"
        if self.optimizer_status == "ok":
            text += optimizers.read_text()
        path = self.out.with_suffix(".md")
        write_text_atomically(path, text)
        return path


def default_out() -> Path:
    out_dir = os.environ.get("OUT")
    return (Path(out_dir) if out_dir else PROJECT_ROOT / "benchmarks") / "gpu_ladder.csv"


def profile_for(args: argparse.Namespace) -> Profile:
    changes: dict[str, Any] = {"overrides": tuple(args.overrides)}
    if args.budget is not None:
        changes["budget_s"] = args.budget
    if args.timed_steps is not None:
        if args.timed_steps < 1:
            raise ValueError(f"--timed-steps must be >= 1, got {args.timed_steps}")
        changes["iters"] = args.timed_steps
    profile = dataclasses.replace(SMOKE if args.smoke else GPU, **changes)
    if profile.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("gpu_ladder: no CUDA device here; run on a GPU box, or --smoke for the CPU ladder")
    return profile


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="model=tiny at tiny sizes on the CPU")
    parser.add_argument("--out", type=Path, default=None, help="CSV of the ladder (default: $OUT or benchmarks/)")
    parser.add_argument("--work-dir", type=Path, default=None, help="per-rung logs and run dirs (default: a temp dir)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole ladder (default: 450, smoke 1800)")
    parser.add_argument("--timed-steps", type=int, default=None, help="timed steps per rung (default: 8, smoke 2)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="MFU peak override (needed on a CPU)")
    parser.add_argument("--skip-compile", action="store_true", help="report the compile rungs as skipped")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every rung (e.g. data.num_bins=8), before "
                        "the rung's own")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    profile = profile_for(args)
    work_dir = (args.work_dir or Path(tempfile.mkdtemp(prefix="gpu_ladder_"))).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    out = (args.out or default_out()).resolve()
    log.info("gpu_ladder: %s, budget %.0f s, work dir %s", profile.device, profile.budget_s, work_dir)
    ladder = Ladder(profile, work_dir, out, skip_compile=args.skip_compile, peak_tflops=args.peak_tflops)
    ladder.run()
    markdown = ladder.write_markdown()
    print(markdown.read_text())
    print(f"written: {out}, {jsonl_path_for(out)}, {markdown}, {out.with_name(f'{out.stem}_optimizers.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
