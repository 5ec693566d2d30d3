"""The DataModule under real DDP: 3 CPU processes (gloo), Lightning's own distributed sampler."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import lightning as L
    import torch
    from vrt_spike.data.datamodule import SpikeDeblurDataModule

    out, root = sys.argv[1], sys.argv[2]

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, _):
            assert batch["spike"].shape[1:] == (3, 4, 16, 16)
            self.seen += [[c, int(s)] for c, s in zip(batch["clip"], batch["frame_start"])]
            return (self.w * batch["blur"].mean()).sum()

        def on_train_epoch_end(self):
            with open(os.path.join(out, f"rank{self.global_rank}.json"), "w") as f:
                json.dump({"seen": self.seen, "world": self.trainer.world_size}, f)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = SpikeDeblurDataModule(
        root=root, clip_len=3, crop_size=16, num_bins=4, batch_size=1, num_workers=0, cache=True,
        build_if_missing=True,
        synthetic=dict(train_clips=2, test_clips=1, frames=6, height=32, width=32, sub_frames=3, spike_steps=4, objects=1),
    )
    trainer = L.Trainer(accelerator="cpu", devices=3, strategy="ddp", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(Recorder(), datamodule=dm)
    """
)


@pytest.mark.slow
def test_ddp_three_processes_shard_the_train_set(tmp_path: Path) -> None:
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    root = tmp_path / "synthetic"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(root)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert all(r["world"] == 3 for r in runs)
    seen = [{tuple(x) for x in r["seen"]} for r in runs]
    assert all(len(r["seen"]) == 3 for r in runs)  # 8 windows -> ceil(8 / 3) per rank
    every = {(f"synth_train_{c:03d}", s) for c in range(2) for s in range(4)}
    assert set().union(*seen) == every
    assert sum(len(s) for s in seen) == 9  # 8 distinct + 1 padding repeat
    # rank 0 built the dataset and the training split's cache exactly once (val and test restore
    # whole clips from the raw streams, so they have no cache)
    caches = sorted(p.name for p in (root / "GOPRO_Large_spike_seq" / "spike_vox").glob("*.h5"))
    assert len(caches) == 1 and caches[0].startswith("train-"), caches
    assert not list(tmp_path.glob(".synthetic.*"))
