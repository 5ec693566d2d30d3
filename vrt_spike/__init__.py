"""VRT+Spike: spike-guided video deblurring.

``vrt_spike.models`` is plain PyTorch; the app's config stack (Hydra, OmegaConf, Lightning) comes
in with ``vrt_spike.lit`` only.
"""
from pathlib import Path

# The project root (the directory holding conf/ and train.py): configs resolve paths from it
# (``${project_root:}``, registered by vrt_spike.lit.config), whatever the working directory.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
