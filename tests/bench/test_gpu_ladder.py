"""``vrt_spike/bench/gpu_ladder.py``: the ladder's plan (carried switches, out-of-memory retries, budget
skips, the best rung) and a real smoke ladder on the CPU whose table has every column filled."""
from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from vrt_spike import PROJECT_ROOT
from vrt_spike.lit.module import build_net

from vrt_spike.bench import gpu_ladder


@pytest.fixture(scope="module")
def ladder_mod():
    return gpu_ladder


# ------------------------------------------------------------------------------------- the plan

def _scripted_ladder(mod, profile, speeds: dict[str, float], rung_s: dict[str, float], oom: set[tuple[str, int]]):
    """A Ladder whose rungs return scripted rows instead of running (the plan alone is tested)."""

    class Scripted(mod.Ladder):
        def _run(self, spec, timeout_s: float) -> dict[str, Any]:
            self.calls.append((spec.rung, spec.crop_size, spec.switches, spec.flops_per_sample, timeout_s))
            if (spec.rung, spec.crop_size) in oom:
                return self._row_without_run(spec.rung, spec.preset, spec.switches, spec.crop_size,
                                             "oom: out of memory: CUDA out of memory", 1.0)
            row = self._row_without_run(spec.rung, spec.preset, spec.switches, spec.crop_size, "ok",
                                        rung_s.get(spec.rung, 1.0))
            row.update(samples_per_s=speeds[spec.rung], _flops_per_sample=1000 + spec.crop_size)
            return row

        def measure_optimizers(self) -> None:
            self.optimizer_status = "not run (scripted)"

    ladder = Scripted(profile, Path("/nonexistent/work"))
    ladder.calls = []
    return ladder


SPEEDS = {"baseline": 1.0, "+bf16": 2.0, "+fused-adamw": 2.2, "+adamw8bit": 2.5, "+batch": 3.0,
          "-checkpointing": 4.0, "+compile": 5.0, "+reduce-overhead": 6.0, "opt@best": 7.0, "fast@best": 8.0}


def test_plan_carries_the_faster_optimizer_retries_smaller_crops_and_runs_presets_at_the_best_rung(ladder_mod) -> None:
    m = ladder_mod
    ladder = _scripted_ladder(m, m.GPU, SPEEDS, {}, oom={("+batch", 256)})
    ladder.run()
    rows = {r["rung"]: r for r in ladder.rows}
    assert [r["rung"] for r in ladder.rows] == list(m.LADDER)
    sw = ladder.switches
    assert sw["baseline"] == m.Switches(precision="32", optim="adamw", fused=False, batch_size=1, checkpointing=True)
    assert sw["+bf16"].precision == "bf16-mixed" and sw["+adamw8bit"].optim == "adamw8bit"
    # 8-bit was faster than fused AdamW here: it goes on up the ladder, one switch at a time.
    assert sw["+batch"] == dataclasses.replace(sw["+adamw8bit"], batch_size=3)
    assert sw["-checkpointing"] == dataclasses.replace(sw["+batch"], checkpointing=False)
    assert sw["+compile"].compile_mode == "default" and sw["+reduce-overhead"].compile_mode == "reduce-overhead"
    assert sw["opt@best"] == sw["fast@best"] == sw["+reduce-overhead"]
    assert rows["opt@best"]["preset"] == "opt" and rows["fast@best"]["preset"] == "fast"
    assert rows["opt@best"]["status"] == "ok (switches of +reduce-overhead)"
    # Out of memory at 256^2: the same rung again at 192^2, and the row says so.
    batch_calls = [(c[0], c[1]) for c in ladder.calls if c[0] == "+batch"]
    assert batch_calls == [("+batch", 256), ("+batch", 192)]
    assert rows["+batch"]["crop_size"] == 192 and rows["+batch"]["status"] == "ok (out of memory at 256^2)"
    # A rung that needs at least +batch's memory starts at 192^2; one that may need less tries 256^2 again.
    assert [c[1] for c in ladder.calls if c[0] == "-checkpointing"] == [192]
    assert rows["-checkpointing"]["status"] == "ok (256^2 not tried: +batch ran out of memory there)"
    assert [c[1] for c in ladder.calls if c[0] in ("opt@best", "fast@best")] == [256, 256]
    # FLOPs are counted once per preset, crop and checkpointing, then handed to the next rung.
    flops = {(c[0], c[1]): c[3] for c in ladder.calls}
    assert flops[("baseline", 256)] is None and flops[("+bf16", 256)] == flops[("+adamw8bit", 256)] == 1256
    assert flops[("+batch", 192)] is None and flops[("-checkpointing", 192)] is None
    assert flops[("+compile", 192)] == 1192 and flops[("opt@best", 256)] is None
    # Every rung runs under its cap and the budget left.
    for rung, _, switches, _, timeout in ladder.calls:
        assert 0 < timeout <= m.GPU.cap_s[switches.kind]
    assert sw["+fused-adamw"] == dataclasses.replace(sw["+bf16"], fused=None)  # the optim group's default


def test_presets_fall_back_to_the_best_eager_rung_when_a_compile_does_not_fit(ladder_mod) -> None:
    m = ladder_mod
    ladder = _scripted_ladder(m, m.GPU, SPEEDS, {"+reduce-overhead": 10_000.0}, oom=set())
    ladder.run()
    rows = {r["rung"]: r for r in ladder.rows}
    assert ladder.switches["opt@best"] == ladder.switches["-checkpointing"]
    assert rows["opt@best"]["status"].startswith("ok (switches of -checkpointing, the best eager rung: compiling opt")


def test_rungs_the_budget_cannot_pay_for_are_skipped_with_the_reason(ladder_mod) -> None:
    m = ladder_mod
    tight = dataclasses.replace(m.GPU, budget_s=40.0)  # eager rungs start (>= 25 s left), compiles (>= 45 s) do not
    ladder = _scripted_ladder(m, tight, SPEEDS, {}, oom=set())
    ladder.run()
    rows = {r["rung"]: r for r in ladder.rows}
    for rung in m.COMPILE_RUNGS:
        assert rows[rung]["status"].startswith("skipped: ladder budget: ") and " rung needs >= " in rows[rung]["status"]
        assert "s kept for opt@best and fast@best" in rows[rung]["status"]  # two eager rungs' time
        assert rows[rung]["samples_per_s"] is None
    assert ladder.switches["opt@best"] == ladder.switches["-checkpointing"]
    assert all(c[0] not in m.COMPILE_RUNGS for c in ladder.calls)
    assert all(c[4] <= 40.0 for c in ladder.calls)


def test_a_worker_past_its_time_is_stopped_and_the_reason_names_the_log(ladder_mod, tmp_path: Path) -> None:
    m = ladder_mod
    spec = m.RungSpec(rung="baseline", preset="baseline", switches=m.Switches(), device="cpu", clip_len=6,
                      crop_size=256, warmup=1, min_steps=1, max_steps=1, measure_s=0.0, run_dir=str(tmp_path))
    (tmp_path / "spec.json").write_text(spec.to_json())
    problem = m.run_subprocess(["--worker", str(tmp_path / "spec.json")], tmp_path / "worker.log", 2.0,
                               m._worker_env(tmp_path))
    assert problem.startswith("timeout: stopped after 2 s during ") and str(tmp_path / "worker.log") in problem
    assert not (tmp_path / m.RESULT_FILE).exists()


# ------------------------------------------------------------------------------------- a real smoke ladder

def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# The tiny preset with one block per VRT stage and 4 spike bins: the cheapest network the ladder's
# code paths all run on (a step of it is mostly SpyNet's fixed cost).
SHRINK = ("model.vrt.depths=[1,1,1,1,1,1,1,1,1]", "data.num_bins=4")


def _fast_smoke_profile(m):
    """The smoke ladder at its cheapest: 40^2 crops, no warm-up, one timed step per rung."""
    return dataclasses.replace(m.SMOKE, crops=(40,), warmup={"eager": 0, "compile": 1, "reduce-overhead": 2},
                               min_steps=1, max_steps=1, optimizer_iters=1, overrides=SHRINK)


def _check_measured_row(r: dict[str, str], m) -> None:
    """Every column of a measured row is filled, and the numbers agree with each other."""
    assert [c for c in m.COLUMNS if r[c] == ""] == [], r["rung"]
    batch, step_ms = int(r["batch_size"]), float(r["step_ms"])
    assert r["preset"] == "tiny" and int(r["crop_size"]) == 40 and int(r["clip_len"]) == 2
    assert float(r["samples_per_s"]) == pytest.approx(batch / (step_ms / 1e3), rel=1e-5)
    assert float(r["mfu"]) == pytest.approx(float(r["flops_per_step"]) / (step_ms / 1e3) / 1e12, rel=1e-5)
    assert float(r["peak_gb"]) > 0 and r["mem_kind"].startswith("cpu_tensors")
    assert float(r["planned_gb"]) > 0  # the rung's memory plan beside its measured peak
    tops = [float(r[f"top{i}_ms"]) for i in (1, 2, 3)]
    assert tops == sorted(tops, reverse=True) and tops[2] > 0 and sum(tops) <= step_ms * 1.001
    assert float(r["warmup_s"]) >= 0 and int(r["timed_steps"]) == 1 and float(r["rung_s"]) > 0


def test_one_measured_rung_and_the_optimizer_table_fill_every_column(ladder_mod, tmp_path: Path) -> None:
    """The ladder's real measurement of `baseline` (train.py's step in this process) and its real
    optimizer table; the other rungs scripted. The whole smoke ladder is the slow test below."""
    m = ladder_mod
    speeds = dict(SPEEDS)

    class OneMeasured(m.Ladder):
        def _run(self, spec, timeout_s: float) -> dict[str, Any]:
            if spec.rung == "baseline":
                return super()._run(spec, timeout_s)
            row = self._row_without_run(spec.rung, spec.preset, spec.switches, spec.crop_size, "ok", 1.0)
            row.update(samples_per_s=speeds[spec.rung], _flops_per_sample=1)
            return row

    ladder = OneMeasured(_fast_smoke_profile(m), tmp_path / "work", in_process=True, peak_tflops=1.0)
    ladder.run()
    paths = ladder.write(tmp_path / "out" / "ladder.csv")
    rows = _read_csv(paths["ladder"])
    assert [r["rung"] for r in rows] == list(m.LADDER) and tuple(rows[0]) == m.COLUMNS
    base = rows[0]
    _check_measured_row(base, m)
    assert (base["precision"], base["compute_dtype"], base["optimizer"], base["checkpointing"]) == ("32", "fp32", "AdamW", "on")
    assert base["status"] == "ok" and all(r["status"].startswith("ok") for r in rows)
    figures = _read_csv(paths["optimizers"])
    assert [(r["model"], r["optim"], r["optimizer"]) for r in figures] == [("tiny", "adamw", "AdamW (fused)"),
                                                                            ("tiny", "adamw8bit", "AdamW8bit")]
    assert 0 < float(figures[1]["state_mib"]) < 0.4 * float(figures[0]["state_mib"])
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        shrunk = build_net(compose("train", overrides=[*SHRINK, "model=tiny", "paths.output_dir=/unused"]).model)
    assert {int(r["params"]) for r in figures} == {sum(p.numel() for p in shrunk.parameters())}  # overrides applied
    markdown = paths["markdown"].read_text()
    assert markdown.count("| tiny |") == len(rows) + 2 and "Optimizer state and step at each preset's size (ok)" in markdown
    assert not [p.name for p in paths["ladder"].parent.iterdir() if p.name.startswith(".")]  # no temp files left


# About 30-50 s on the quiet 2-core box, several minutes when it is shared: over the fast budget.
@pytest.mark.slow
def test_smoke_ladder_without_compile_fills_every_column(ladder_mod, tmp_path: Path) -> None:
    """The whole smoke ladder in this process, the compile rungs skipped."""
    m = ladder_mod
    profile = _fast_smoke_profile(m)
    ladder = m.Ladder(profile, tmp_path / "work", in_process=True, skip_compile=True, peak_tflops=1.0)
    ladder.run()
    paths = ladder.write(tmp_path / "out" / "ladder.csv")

    rows = _read_csv(paths["ladder"])
    assert [r["rung"] for r in rows] == list(m.LADDER) and tuple(rows[0]) == m.COLUMNS
    by_rung = {r["rung"]: r for r in rows}
    ran = [r for r in rows if r["status"].startswith("ok")]
    assert {r["rung"] for r in rows} - {r["rung"] for r in ran} == set(m.COMPILE_RUNGS)
    for rung in m.COMPILE_RUNGS:
        assert by_rung[rung]["status"] == "skipped: --skip-compile"
    for r in ran:
        _check_measured_row(r, m)
    base = by_rung["baseline"]
    assert (base["precision"], base["compute_dtype"], base["optimizer"], base["checkpointing"]) == ("32", "fp32", "AdamW", "on")
    assert by_rung["+bf16"]["compute_dtype"] == "bf16" and by_rung["+bf16"]["optimizer"] == "AdamW"
    assert by_rung["+fused-adamw"]["optimizer"] == "AdamW (fused)" and by_rung["+adamw8bit"]["optimizer"] == "AdamW8bit"
    assert int(by_rung["+batch"]["batch_size"]) == profile.batch
    assert int(by_rung["+batch"]["flops_per_step"]) == profile.batch * int(base["flops_per_step"])
    assert by_rung["-checkpointing"]["checkpointing"] == "off"
    best = max((r for r in ran if r["rung"] in m.LADDER[:8]), key=lambda r: float(r["samples_per_s"]))
    assert by_rung["opt@best"]["status"] == f"ok (switches of {best['rung']})"

    figures = _read_csv(paths["optimizers"])
    assert [(r["model"], r["optim"]) for r in figures] == [("tiny", "adamw"), ("tiny", "adamw8bit")]
    markdown = paths["markdown"].read_text()
    assert markdown.count("| tiny |") == len(rows) + 2 and "Optimizer state and step" in markdown
    assert not [p.name for p in paths["ladder"].parent.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.slow
def test_full_smoke_ladder_through_the_cli(ladder_mod, tmp_path: Path) -> None:
    """`--smoke` as CI runs it: every rung in its own subprocess, the compile rungs included."""
    import subprocess

    out = tmp_path / "out" / "ladder.csv"
    proc = subprocess.run([sys.executable, "-m", "vrt_spike.bench.gpu_ladder", "--smoke", "--peak-tflops", "1", "--out", str(out),
                           "--work-dir", str(tmp_path / "work")], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _read_csv(out)
    assert [r["rung"] for r in rows] == list(ladder_mod.LADDER)
    for r in rows:
        assert r["status"].startswith("ok"), (r["rung"], r["status"])
        if r["status"].startswith("ok"):
            assert float(r["samples_per_s"]) > 0 and int(r["timed_steps"]) == 2
    compiled = {r["rung"]: r for r in rows}
    assert compiled["+compile"]["compile"] == "default" and compiled["+reduce-overhead"]["compile"] == "reduce-overhead"
    assert (out.with_suffix(".md")).read_text() in proc.stdout
