"""The spike floor in the app: `evaluate.py method=sdm|tfp`, `val/psnr_spike_floor` in a fit, the verdict."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from train_support import SYNTH, run_script, tiny_overrides

from vrt_spike.data import layout
from vrt_spike.data.footage import ClipDataset, FloorReading, SpikeReading
from vrt_spike.lit.evaluation import evaluate
from vrt_spike.lit.module import score_frames
from vrt_spike.lit.verdict import verdict


def _read(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _floor_overrides(root: Path, out: Path) -> list[str]:
    return [f"paths.output_dir={out}", f"data.root={root}", *[f"data.synthetic.{k}={v}" for k, v in SYNTH.items()],
            "data.clip_len=2", "data.num_workers=0", "data.persistent_workers=false"]


@pytest.mark.parametrize("method", ["sdm", "tfp"])
def test_evaluate_scores_the_spike_floor_per_clip_like_a_checkpoint(compose_cfg, synthetic_root: Path, tmp_path: Path, method: str,
                                                                    capsys) -> None:
    cfg = compose_cfg("evaluate", [*_floor_overrides(synthetic_root, tmp_path), f"method={method}"])
    result = evaluate(cfg)
    rows, frames = _read(tmp_path / "metrics.csv"), _read(tmp_path / "metrics_frames.csv")
    assert len(frames) == 2 * 6 and rows[-1]["clip"] == "mean (all frames)" and len(rows) == 3
    # the reading *is* the restoration here: its PSNR column and the floor column agree
    assert all(float(f["test/psnr"]) == pytest.approx(float(f["test/psnr_spike_floor"])) for f in frames)
    # equal to the reading computed straight from the whole clips, frame by frame
    ds = ClipDataset(layout.discover(synthetic_root, "test"), SpikeReading.from_data_config(cfg.data),
                     floor=FloorReading(method, float(cfg.data.sharp_instant), float(cfg.data.sharp_width)))
    direct = []
    for s in ds:
        batch = {k: (v[None] if hasattr(v, "ndim") else [v]) for k, v in s.items()}
        direct += score_frames(s["spike_floor"][None], batch)
    assert [float(f["test/psnr"]) for f in frames] == pytest.approx([r["psnr"] for r in direct], abs=1e-4)
    assert result["mean"]["psnr"] > result["mean"]["psnr_input"]  # the spikes sharpen the blur
    assert method in capsys.readouterr().out


def test_evaluate_needs_a_checkpoint_or_a_floor_method(compose_cfg, synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="method=checkpoint needs ckpt_path"):
        evaluate(compose_cfg("evaluate", _floor_overrides(synthetic_root, tmp_path)))
    with pytest.raises(ValueError, match="method must be checkpoint or one of"):
        evaluate(compose_cfg("evaluate", [*_floor_overrides(synthetic_root, tmp_path), "method=oracle"]))


def test_tiny_fit_logs_the_floor_and_prints_the_verdict(synthetic_root: Path, tmp_path: Path) -> None:
    """Validation on the whole split at full frames: the verdict names input, floor and model."""
    run_dir = tmp_path / "run"
    args = [*tiny_overrides(synthetic_root), f"hydra.run.dir={run_dir}", "data.eval_crop_size=null",
            "trainer.limit_val_batches=1.0"]
    proc = run_script("train.py", args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["val_psnr_spike_floor"] > summary["val_psnr_input"]
    assert summary["val_scope"] == {"frames": 12, "clips": 2, "scored": 12, "size": [64, 64], "whole_split": True}
    metrics = _read(next(run_dir.rglob("metrics.csv")))
    assert any(r.get("val/psnr_spike_floor") for r in metrics)
    assert "verdict on the whole val split (12 frames of 2 clips at 64x64, full frames)" in proc.stdout
    assert summary["val_split"] == "val" and summary["test_split"] is None  # test=false: no test figure
    assert f"spike floor {summary['val_psnr_spike_floor']:.2f} dB" in proc.stdout
    strip = sorted((run_dir / "images").glob("val_step*.png"))[-1]
    from PIL import Image

    with Image.open(strip) as im:  # blur | spike floor | restored | sharp, full 64x64 frames shown 2x
        assert im.size == (4 * 128 + 5 * 4, 128 + 2 * 4)


def test_verdict_refuses_a_subset_and_names_the_splits() -> None:
    base = {"val_psnr": 31.0, "val_psnr_input": 28.0, "val_psnr_spike_floor": 31.5, "val_ssim": 0.9, "val_split": "val"}
    whole = {"frames": 32, "clips": 2, "scored": 32, "size": [128, 128], "whole_split": True}
    lines = verdict({**base, "val_scope": whole})
    assert lines[0] == "val/psnr 31.00 dB | blurry input 28.00 dB (+3.00) | spike floor 31.50 dB (-0.50)   val/ssim 0.9000"
    assert lines[1] == ("verdict on the whole val split (32 frames of 2 clips at 128x128, full frames): "
                        "beats the input; does NOT beat the spike floor")
    subset = verdict({**base, "val_scope": {**whole, "scored": 6, "size": [64, 64], "whole_split": False}})
    assert subset[1].startswith("NOT a verdict: measured on a subset (6 frames at 64x64) of the val split (32 frames")
    tested = verdict({**base, "val_scope": whole, "test_split": "test", "test_psnr": 32.0, "test_psnr_input": 28.2,
                       "test_psnr_spike_floor": 31.2, "test_ssim": 0.91, "test_scope": whole,
                       "best_ckpt": "/run/checkpoints/best-step0000320-psnr31.00.ckpt", "best_val_psnr": 31.0})
    assert tested[2] == "test/psnr 32.00 dB | blurry input 28.20 dB (+3.80) | spike floor 31.20 dB (+0.80)   test/ssim 0.9100"
    assert tested[3] == ("test figure of the checkpoint selected on val (best-step0000320-psnr31.00.ckpt, val/psnr 31.00 dB) "
                         "on the whole test split (32 frames of 2 clips at 128x128, full frames): beats the input and "
                         "the spike floor")
