"""Host syncs per training step of a real fit through train.py's code, and where they come from.

    python benchmarks/host_syncs.py                       # tiny preset, 8 steps, fp32 AdamW
    python benchmarks/host_syncs.py --steps 8 optim=adamw8bit trainer.precision=bf16-mixed
    python benchmarks/host_syncs.py model.compile=true    # the first steps compile (minutes on a CPU)

Counts ``aten::_local_scalar_dense`` (every ``.item()``, ``bool(t)``, ``float(t)``, branch on a
tensor) in the main process between the start of the 2nd training batch and the start of the
last, with logging, timing and progress-bar intervals longer than the fit (what they read at
their interval is not part of a step). The embedded synthetic dataset (``data/synthetic``; built
when missing), one loader worker, validation off.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from vrt_spike.lit.run import train  # noqa: E402
from vrt_spike.profiling.host_syncs import SyncsPerBatch  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="training steps (>= 3)")
    p.add_argument("--first", type=int, default=1, help="count from this batch's start (later ones skip compile)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides of conf/train.yaml")
    args = p.parse_args()
    if args.steps < args.first + 2:
        p.error("--steps must leave at least two counted steps after --first")
    with tempfile.TemporaryDirectory() as out:
        overrides = ["model=tiny", "trainer=cpu", "logger=none", f"paths.output_dir={out}",
                     "data.clip_len=2", "data.crop_size=48", "data.batch_size=2", "data.num_workers=1",
                     f"trainer.max_steps={args.steps}", "trainer.limit_val_batches=0",
                     "trainer.log_every_n_steps=100000", "callbacks.timing.interval=100000",
                     "callbacks.timing.console=off", "callbacks.progress_bar.refresh_rate=100000",
                     "+callbacks.sync_probe._target_=vrt_spike.profiling.host_syncs.SyncsPerBatch", *args.overrides]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        SyncsPerBatch.runs.clear()
        train(cfg)
    (probe,) = SyncsPerBatch.runs
    per_step, sites = probe.per_step(first=args.first)
    counted = len(probe.at_start) - 1 - args.first
    print(f"\nhost syncs per training step: {per_step:g} (over {counted} steps; {probe.counter.count} in the whole "
          f"fit, setup and teardown included); overrides: {' '.join(args.overrides) or '(none)'}")
    for site, n in sites.most_common(10):
        print(f"  {n / counted:6.2f}/step  {site}")


if __name__ == "__main__":
    main()
