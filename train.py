"""Train VRT+Spike: `python train.py [experiment=demo] [model=fast trainer.devices=3] [-m hparams_search=depths]`.

Works from any working directory: the configs resolve paths from this file's directory.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import vrt_spike.lit  # noqa: E402,F401  (registers the resolvers conf/ uses)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | tuple[float, ...]:
    from vrt_spike.lit.sweep_job import run_task

    return run_task(cfg)  # the sweeper's objectives (`objectives`)


if __name__ == "__main__":
    main()
