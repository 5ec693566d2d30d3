"""DDP with 3 CPU processes (gloo): every rank's rows reach rank 0's table, rank column kept."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vrt_spike.timing.table import read_rows, read_summary

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    import lightning.pytorch as pl
    from conftest import ToyVRTWithSpike, toy_batch
    from vrt_spike.timing.callback import TimingCallback

    torch.set_num_threads(1)

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 12
        def __getitem__(self, i):
            return {{k: v[0] for k, v in toy_batch().items()}}

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = ToyVRTWithSpike()
        def training_step(self, batch, batch_idx):
            return (self.net(batch["blur"], batch["spike"]) - batch["sharp"]).abs().mean()
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    if __name__ == "__main__":
        cb = TimingCallback(interval=2, console="off")
        trainer = pl.Trainer(accelerator="cpu", devices=3, strategy="ddp", max_steps=4, callbacks=[cb],
                             default_root_dir={out!r}, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False,
                             use_distributed_sampler=True)
        trainer.fit(Lit(), torch.utils.data.DataLoader(Data(), batch_size=1))
        if trainer.global_rank == 0:
            print(cb.summary())
""")


@pytest.mark.slow  # three gloo processes: about a minute on 2 cores
def test_ddp_three_processes_rows_for_every_rank(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests" / "timing"), out=str(tmp_path / "run")))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(tmp_path / "run")
    assert {r.rank for r in rows} == {0, 1, 2}
    for rank in range(3):
        mine = [r for r in rows if r.rank == rank]
        assert sorted({r.step for r in mine}) == [0, 1, 2, 3]
        regions = {r.region for r in mine}
        assert {"step", "forward.vrt.stage8", "backward", "backward.ddp_sync", "optimizer_step"} <= regions
        for step in range(4):
            per = {r.region: r.ms for r in mine if r.step == step}
            assert per["backward.ddp_sync"] <= per["backward"] <= per["step"]
    # Two gathers during the fit: two part files, each holding all three ranks.
    parts = sorted((tmp_path / "run" / "timing" / "rows").glob("part-*.csv"))
    assert len(parts) == 2
    assert {r.region: r.n for r in read_summary(tmp_path / "run")}["step"] == 3 * 3  # 3 ranks x 3 post-warm-up steps
    assert "3 process(es)" in proc.stdout
