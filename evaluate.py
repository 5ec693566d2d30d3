"""Evaluate a checkpoint: `python evaluate.py ckpt_path=<file> [data=gopro_spike] [save_images=true]`.

Prints and writes per-clip and mean PSNR/SSIM (CSV in the run dir). Works from any working directory.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import vrt_spike.lit  # noqa: E402,F401  (registers the resolvers conf/ uses)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from vrt_spike.lit.evaluation import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
