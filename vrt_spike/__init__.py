"""VRT+Spike: spike-guided video deblurring."""
from pathlib import Path

from omegaconf import OmegaConf

# The project root (the directory holding conf/ and train.py). Configs use `${project_root:}` so
# every entry point (train.py, evaluate.py, python -m vrt_spike.bench) resolves paths from it,
# whatever the working directory.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)

# The embedded synthetic data's ground truth is sub-frame N // 2 of the N sub-frames an exposure
# averages (vrt_spike.data.simulate.blur_and_sharp): its centre, as a fraction of the exposure.
OmegaConf.register_new_resolver("synthetic_sharp_instant", lambda n: (int(n) // 2 + 0.5) / int(n), replace=True)
