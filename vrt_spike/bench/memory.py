"""`python -m vrt_spike.bench.memory [train.py overrides]`: will this training config fit?

    python -m vrt_spike.bench.memory model=baseline data.clip_len=6 data.crop_size=256 data.batch_size=1
    python -m vrt_spike.bench.memory model=fast data.clip_len=6 data.crop_size=256 memory.solve=batch
    python -m vrt_spike.bench.memory model=opt memory.solve=crop memory.device_gb=24

Composes `conf/train.yaml` as train.py does (`conf/memory.yaml` only renames the task) and prints,
for one training step on one device: parameters, gradients, optimizer states, the batch, the
activations backward needs by region, the forward and backward peaks and the step's peak
(`vrt_spike.lit.memory_plan`: fake tracing on the CPU, nothing runs on a GPU); the verdict for
24, 48, 80 and 141 GB cards and `memory.device_gb`; with `memory.solve=batch|crop`, the largest
`data.batch_size` or square `data.crop_size` that fits `memory.device_gb`; for a config that does
not fit `memory.device_gb`, the cheapest lever that does. Writes `<run dir>/memory_plan.json`.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vrt_spike.lit  # noqa: F401  (registers the resolvers conf/ uses)
from vrt_spike import PROJECT_ROOT


def plan_main(cfg: DictConfig) -> int:
    """Plan, print, write ``memory_plan.json``; returns the planned peak in bytes."""
    from pathlib import Path

    from vrt_spike.lit.config import check_config
    from vrt_spike.lit.memory_fit import (
        PLAN_FILE, card_verdicts, cards_gib, cheapest_fit, solve, verdict_lines, write_plan,
    )
    from vrt_spike.lit.memory_plan import GIB, plan_table, plan_training_step
    from vrt_spike.lit.runtime import task_overrides

    check_config(cfg)
    memory = cfg.memory
    overrides = task_overrides()
    device_gb, reserve = float(memory.device_gb), float(memory.reserve_gb)
    capacity = int((device_gb - reserve) * GIB)
    plan = plan_training_step(cfg, target="cuda", overrides=overrides)
    verdicts = card_verdicts(plan, cards_gib(device_gb), reserve)
    print(plan_table(plan), verdict_lines(verdicts, reserve), sep="\n", flush=True)
    extra = {"cards": verdicts, "device_gb": device_gb, "reserve_gb": reserve}
    if plan.peak_bytes > capacity:
        lever, _, advice = cheapest_fit(cfg, capacity)
        print(f"For memory.device_gb={device_gb:g}: {advice}", flush=True)
        extra.update(advice=advice, lever=None if lever is None else list(lever.overrides))
    if memory.solve is not None:
        solution = solve(cfg, str(memory.solve), capacity, known=plan)
        print(f"memory.solve={memory.solve} for memory.device_gb={device_gb:g}: {solution.describe()}", flush=True)
        extra["solve"] = solution
    path = write_plan(Path(cfg.paths.output_dir) / PLAN_FILE, plan, **extra)
    print(f"written: {path}", flush=True)
    return plan.peak_bytes


def main() -> None:
    hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="memory")(plan_main)()


if __name__ == "__main__":
    main()
