"""Test instrument: train.py's own training step measured in a fresh process, beside its memory plan.

    MALLOC_MMAP_THRESHOLD_=8192 python tests/train/measured_step.py OUT.json [train.py override ...]

Runs `vrt_spike.lit.training.train` on the composed config through the bench's measured fit (one
fixed random batch, one warm-up step, one timed step; its pre-flight plans the step) and writes
``{"measured": bytes, "planned": bytes, "kind": ...}``: the StepProbe's tensors peak of the timed
step (`vrt_spike.timing.memory.PeakMemory`: the tensors live at the warm-up's end plus the RSS
rise, exact only with glibc's mmap threshold pinned as above) and the plan's peak.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

import vrt_spike.lit  # noqa: F401  (registers the resolvers conf/ uses)
from vrt_spike import PROJECT_ROOT
from vrt_spike.bench.step_measure import fixed_batch_config, read_probe
from vrt_spike.lit.training import train


def main(out: Path, overrides: list[str]) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="measured_step_"))
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "logger=none", "trainer.accelerator=cpu", "memory.check=true",
                                          f"paths.output_dir={run_dir}"])
    train(fixed_batch_config(cfg, run_dir=run_dir, warmup=1, steps=1, breakdown=False))
    probe = read_probe(run_dir)
    out.write_text(json.dumps({"measured": probe["peak_bytes"], "planned": probe["planned_peak_bytes"],
                               "kind": probe["mem_kind"]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
