"""The models are plain PyTorch: importable without the app's config and training stack."""
from __future__ import annotations

import subprocess
import sys

APP_STACK = ("lightning", "lightning_fabric", "pytorch_lightning", "hydra", "omegaconf", "wandb")


def test_models_import_no_lightning_hydra_or_omegaconf() -> None:
    # A fresh interpreter: this test session has already imported all of them.
    code = ("import sys, vrt_spike.models, vrt_spike.models.vrt_with_spike, vrt_spike.restore\n"
            f"stack = {APP_STACK!r}\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(stack)))\n"
            "print(sorted(m for m in sys.modules if m.startswith('vrt_spike.timing')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["[]", "[]"], out
