"""Deblur footage without ground truth: `python predict.py ckpt_path=<file> [input.root=... | input.blur_dir=...]`.

Writes <out_dir>/<clip>/<stem>.png (one per input frame, at its size) and <out_dir>/<clip>.mp4
(blurred | restored). Works from any working directory.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import vrt_spike.lit  # noqa: E402,F401  (registers the resolvers conf/ uses)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from vrt_spike.predict import predict

    predict(cfg)


if __name__ == "__main__":
    main()
