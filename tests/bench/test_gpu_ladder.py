"""``vrt_spike/bench/gpu_ladder.py``: the ladder's plan (the override sets, carried switches,
out-of-memory retries, budget skips, the best rung) against a scripted bench, one rung through the
real bench, and (slow) the whole smoke ladder on the CPU."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from vrt_spike.bench import gpu_ladder as m
from vrt_spike.bench.results import FIELDS, append_row, read_jsonl, unmeasured_row
from vrt_spike.tables import read_csv

SPEEDS = {"baseline": 1.0, "+bf16": 2.0, "+fused-adamw": 2.2, "+adamw8bit": 2.5, "+batch": 3.0,
          "-checkpointing": 4.0, "+compile": 5.0, "+reduce-overhead": 6.0, "opt@best": 7.0, "fast@best": 8.0}


class ScriptedBench:
    """Stands in for `python -m vrt_spike.bench`: appends the row the bench would (samples/s from
    `speeds`, `oom` at the listed (rung, crop)), and moves a fake clock on by each rung's seconds."""

    def __init__(self, speeds: dict[str, float], rung_s: dict[str, float] | None = None,
                 oom: frozenset[tuple[str, int]] = frozenset()) -> None:
        self.speeds, self.rung_s, self.oom = speeds, rung_s or {}, oom
        self.now = 0.0
        self.calls: list[tuple[dict[str, str], float]] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, overrides, log_path: Path, timeout_s: float, env) -> str | None:
        args = dict(o.split("=", 1) for o in overrides if "=" in o)
        self.calls.append((args, timeout_s))
        if "-m" in overrides:  # the optimizer table's multirun
            (Path(args["hydra.sweep.dir"])).mkdir(parents=True)
            (Path(args["hydra.sweep.dir"]) / "optimizer_figures.csv").write_text("model,optim\nbaseline,adamw\n")
            (Path(args["hydra.sweep.dir"]) / "optimizer_figures.md").write_text("| model | optim |\n")
            return None
        rung, crop = args["bench.label"].strip("'"), int(args["data.crop_size"])
        self.now += self.rung_s.get(rung, 1.0)
        known = dict(label=rung, model=args["model"], crop_size=crop, batch_size=int(args["data.batch_size"]))
        if (rung, crop) in self.oom:
            append_row(args["bench.out"], unmeasured_row("oom: OutOfMemoryError: CUDA out of memory", **known))
            return "exit code 1: OutOfMemoryError"
        append_row(args["bench.out"], unmeasured_row("ok", **known, train_samples_per_s=self.speeds[rung],
                                                     train_step_ms_median=1e3 / self.speeds[rung], warmup_s=1.0))
        return None


def _ladder(tmp_path: Path, bench: ScriptedBench, profile: m.Profile = m.GPU) -> m.Ladder:
    ladder = m.Ladder(profile, tmp_path / "work", tmp_path / "out" / "ladder.csv", run=bench, clock=bench.clock)
    ladder.run()
    return ladder


def test_plan_carries_the_faster_optimizer_retries_smaller_crops_and_runs_presets_at_the_best_rung(tmp_path) -> None:
    bench = ScriptedBench(SPEEDS, oom=frozenset({("+batch", 256)}))
    ladder = _ladder(tmp_path, bench)
    rows = read_jsonl(tmp_path / "out" / "ladder.jsonl")
    assert [r["label"] for r in rows] == ["baseline", "+bf16", "+fused-adamw", "+adamw8bit", "+batch", "+batch",
                                          "-checkpointing", "+compile", "+reduce-overhead", "opt@best", "fast@best"]
    assert all(tuple(r) == FIELDS for r in rows)  # one row schema, the bench's
    sw = ladder.switches
    assert sw["baseline"] == m.Switches(precision="32", optim="adamw", fused=False, batch_size=1, checkpointing=True)
    assert sw["+bf16"].precision == "bf16-mixed" and sw["+adamw8bit"].optim == "adamw8bit"
    assert sw["+fused-adamw"] == dataclasses.replace(sw["+bf16"], fused=None)  # the optim group's default
    # 8-bit was faster than fused AdamW here: it goes on up the ladder, one switch at a time.
    assert sw["+batch"] == dataclasses.replace(sw["+adamw8bit"], batch_size=3)
    assert sw["-checkpointing"] == dataclasses.replace(sw["+batch"], checkpointing=False)
    assert sw["+compile"].compile_mode == "default" and sw["+reduce-overhead"].compile_mode == "reduce-overhead"
    assert sw["opt@best"] == sw["fast@best"] == sw["+reduce-overhead"]
    # Each rung is the bench with its override set.
    runs = {a["bench.label"].strip("'"): a for a, _ in bench.calls if "bench.label" in a}
    assert {k: runs["baseline"][k] for k in ("model", "trainer.precision", "optim", "optim.fused", "data.batch_size",
                                             "bench.checkpointing", "model.compile", "data.clip_len", "bench.inference",
                                             "bench.warmup", "bench.device")} == {
        "model": "baseline", "trainer.precision": "32", "optim": "adamw", "optim.fused": "false", "data.batch_size": "1",
        "bench.checkpointing": "on", "model.compile": "false", "data.clip_len": "6", "bench.inference": "false",
        "bench.warmup": "2", "bench.device": "cuda"}
    assert "optim.fused" not in runs["+adamw8bit"] and runs["-checkpointing"]["bench.checkpointing"] == "off"
    assert (runs["+reduce-overhead"]["model.compile_mode"], runs["+reduce-overhead"]["bench.warmup"]) == ("reduce-overhead", "4")
    assert runs["opt@best"]["model"] == "opt" and runs["fast@best"]["model"] == "fast"
    optimizers = bench.calls[0][0]  # first: the optimizer table, the bench's own optimizer figures
    assert optimizers["model"] == "baseline,opt,fast" and optimizers["bench.optimizer_figures"] == "true"
    # Out of memory at 256^2: the same rung again at 192^2; a rung that needs at least +batch's memory
    # starts at 192^2, one that may need less tries 256^2 again.
    crops = [(a["bench.label"].strip("'"), int(a["data.crop_size"])) for a, _ in bench.calls if "bench.label" in a]
    assert [c for c in crops if c[0] in ("+batch", "-checkpointing", "opt@best")] == [
        ("+batch", 256), ("+batch", 192), ("-checkpointing", 192), ("opt@best", 256)]
    assert [r["status"] for r in rows[4:6]] == ["oom: OutOfMemoryError: CUDA out of memory", "ok"]
    assert "-checkpointing: 256^2 not tried, +batch ran out of memory there" in ladder.notes
    assert "opt@best: the switches of +reduce-overhead" in ladder.notes
    # Every rung runs under its cap and the budget left.
    for args, timeout in bench.calls[1:]:
        assert 0 < timeout <= m.GPU.cap_s[ladder.switches[args["bench.label"].strip("'")].kind]
    markdown = ladder.write_markdown().read_text()
    assert markdown.count("| +batch |") == 2 and "| 8.000 |" in markdown
    assert "- opt@best: the switches of +reduce-overhead" in markdown and "| model | optim |" in markdown
    assert read_csv(tmp_path / "out" / "ladder_optimizers.csv") == [{"model": "baseline", "optim": "adamw"}]


def test_presets_fall_back_to_the_best_eager_rung_when_a_compile_does_not_fit(tmp_path) -> None:
    ladder = _ladder(tmp_path, ScriptedBench(SPEEDS, rung_s={"+reduce-overhead": 380.0}))
    assert ladder.switches["opt@best"] == ladder.switches["-checkpointing"]
    assert any(n.startswith("opt@best: the switches of -checkpointing, the best eager rung: compiling opt")
               for n in ladder.notes)


def test_rungs_the_budget_cannot_pay_for_are_skipped_with_the_reason(tmp_path) -> None:
    tight = dataclasses.replace(m.GPU, budget_s=40.0)  # eager rungs start (>= 25 s left), compiles (>= 45 s) do not
    bench = ScriptedBench(SPEEDS)
    ladder = _ladder(tmp_path, bench, tight)
    rows = {r["label"]: r for r in read_jsonl(tmp_path / "out" / "ladder.jsonl")}
    for rung in m.COMPILE_RUNGS:
        assert rows[rung]["status"].startswith("skipped: ladder budget: ") and " rung needs >= " in rows[rung]["status"]
        assert "s kept for opt@best and fast@best" in rows[rung]["status"]  # two eager rungs' time
        assert rows[rung]["train_samples_per_s"] is None
    assert ladder.switches["opt@best"] == ladder.switches["-checkpointing"]
    assert all(a.get("bench.label", "").strip("'") not in m.COMPILE_RUNGS for a, _ in bench.calls)
    assert all(timeout <= 40.0 for _, timeout in bench.calls)


def test_a_bench_past_its_time_is_stopped_and_the_reason_names_the_log(tmp_path: Path) -> None:
    problem = m.run_bench(["model=tiny"], tmp_path / "bench.log", 2.0, m.bench_env(m.SMOKE, tmp_path))
    assert problem == f"timeout: stopped after 2 s (log {tmp_path / 'bench.log'})"


@pytest.mark.slow  # a GPU-box driver, not a mission path: a bench process started for a row (~6 s)
def test_a_rung_runs_the_real_bench_which_writes_its_row(tmp_path: Path) -> None:
    """One rung through `python -m vrt_spike.bench`: the bench composes the rung's overrides and writes
    its row to the ladder's table itself, here the row of a configuration that fails before its
    first step (0 timed steps), with the reason."""
    profile = dataclasses.replace(m.SMOKE, crops=(40,), iters=0)
    ladder = m.Ladder(profile, tmp_path / "work", tmp_path / "ladder.csv")
    row = ladder.measure("baseline", "baseline", m.Switches())
    assert row["status"] == "failed: ValueError: bench.iters must be >= 1, got 0"
    assert (row["label"], row["model"], row["crop_size"], row["clip_len"], row["device"]) == ("baseline", "tiny", 40, 2, "cpu")
    assert read_jsonl(tmp_path / "ladder.jsonl") == [row]


# ------------------------------------------------------------------------------------- a real smoke ladder

@pytest.mark.slow
def test_full_smoke_ladder_through_the_cli(tmp_path: Path) -> None:
    """`--smoke` as CI runs it: every rung a `python -m vrt_spike.bench` subprocess, the compile rungs
    included; the tiny preset with one block per VRT stage (the cheapest network every path runs on)."""
    out = tmp_path / "out" / "ladder.csv"
    proc = subprocess.run([sys.executable, "-m", "vrt_spike.bench.gpu_ladder", "--smoke", "--peak-tflops", "1",
                           "--out", str(out), "--work-dir", str(tmp_path / "work"),
                           "model.vrt.depths=[1,1,1,1,1,1,1,1,1]", "data.num_bins=4"],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_csv(out, FIELDS)
    assert [r["label"] for r in rows] == list(m.LADDER)
    for r in rows:
        assert r["status"] == "ok", (r["label"], r["status"])
        blanks = {k for k, v in r.items() if v == ""}
        assert blanks <= {"sweep_id", "overrides"} | {k for k in FIELDS if k.startswith("infer_")}, blanks
        step_ms = float(r["train_step_ms_median"])
        assert float(r["train_samples_per_s"]) == pytest.approx(int(r["batch_size"]) / (step_ms / 1e3), rel=1e-5)
        assert float(r["train_mfu"]) == pytest.approx(float(r["train_flops_per_step"]) / (step_ms / 1e3) / 1e12, rel=1e-5)
        assert r["mem_kind"] == "cpu_tensors_rss_rise" and float(r["train_planned_mem_mib"]) > 0
        assert int(r["kernels_per_step"]) >= int(r["ops_per_step"]) > 0 and int(r["iters"]) == 2
    by_rung = {r["label"]: r for r in rows}
    assert by_rung["+bf16"]["compute_dtype"] == "bf16" and by_rung["baseline"]["optimizer"] == "AdamW"
    assert by_rung["+fused-adamw"]["optimizer"] == "AdamW (fused)" and by_rung["+adamw8bit"]["optimizer"] == "AdamW8bit"
    assert int(by_rung["+batch"]["train_flops_per_step"]) == 2 * int(by_rung["+bf16"]["train_flops_per_step"])
    assert by_rung["-checkpointing"]["checkpointing"] == "off" and by_rung["+compile"]["compile"] == "True"
    # compile fuses: fewer kernels per step than eager
    assert int(by_rung["+compile"]["kernels_per_step"]) < int(by_rung["-checkpointing"]["kernels_per_step"])
    optimizers = read_csv(out.with_name("ladder_optimizers.csv"))
    assert [(r["model"], r["optim"]) for r in optimizers] == [("tiny", "adamw"), ("tiny", "adamw8bit")]
    assert out.with_suffix(".md").read_text() in proc.stdout
