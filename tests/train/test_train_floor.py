"""The spike floor in the app: `evaluate.py method=sdm|tfp`, `val/psnr_spike_floor` in a fit, the verdict."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from train_support import SYNTH, compose_cfg, run_script, tiny_overrides

from vrt_spike.data.dataset import SpikeDeblurDataset
from vrt_spike.lit.module import score_frames
from vrt_spike.lit.run import _verdict, evaluate


def _read(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _floor_overrides(root: Path, out: Path) -> list[str]:
    return [f"paths.output_dir={out}", f"data.root={root}", *[f"data.synthetic.{k}={v}" for k, v in SYNTH.items()],
            "data.clip_len=2", "data.num_workers=0", "data.persistent_workers=false"]


@pytest.mark.parametrize("method", ["sdm", "tfp"])
def test_evaluate_scores_the_spike_floor_per_clip_like_a_checkpoint(synthetic_root: Path, tmp_path: Path, method: str,
                                                                    capsys) -> None:
    cfg = compose_cfg("evaluate", [*_floor_overrides(synthetic_root, tmp_path), f"method={method}"])
    result = evaluate(cfg)
    rows, frames = _read(tmp_path / "metrics.csv"), _read(tmp_path / "metrics_frames.csv")
    assert len(frames) == 2 * 6 and rows[-1]["clip"] == "mean (all frames)" and len(rows) == 3
    # the reading *is* the restoration here: its PSNR column and the floor column agree
    assert all(float(f["psnr"]) == pytest.approx(float(f["psnr_spike_floor"])) for f in frames)
    # equal to the reading computed straight from the dataset, frame by frame
    ds = SpikeDeblurDataset(synthetic_root, "test", clip_len=6, crop_size=None, num_bins=int(cfg.data.num_bins),
                            stride=6, spike_upsample="bilinear", spike_floor=method,
                            sharp_instant=float(cfg.data.sharp_instant), sharp_width=float(cfg.data.sharp_width))
    direct = []
    for i in range(len(ds)):
        s = ds[i]
        batch = {k: (v[None] if hasattr(v, "ndim") else [v] if k == "clip" else v) for k, v in s.items() if k != "timings"}
        batch["frame_start"] = [s["frame_start"]]
        direct += score_frames(s["spike_floor"][None], batch)
    assert [float(f["psnr"]) for f in frames] == pytest.approx([r["psnr"] for r in direct], abs=1e-4)
    assert result["mean"]["psnr"] > result["mean"]["psnr_input"]  # the spikes sharpen the blur
    assert method in capsys.readouterr().out


def test_evaluate_needs_a_checkpoint_or_a_floor_method(synthetic_root: Path, tmp_path: Path) -> None:
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
    assert f"spike floor {summary['val_psnr_spike_floor']:.2f} dB" in proc.stdout
    strip = sorted((run_dir / "images").glob("val_step*.png"))[-1]
    from PIL import Image

    with Image.open(strip) as im:  # blur | spike floor | restored | sharp, full 64x64 frames shown 2x
        assert im.size == (4 * 128 + 5 * 4, 128 + 2 * 4)


def test_verdict_refuses_a_subset() -> None:
    base = {"val_psnr": 31.0, "val_psnr_input": 28.0, "val_psnr_spike_floor": 31.5, "val_ssim": 0.9}
    whole = {"frames": 32, "clips": 2, "scored": 32, "size": [128, 128], "whole_split": True}
    lines = _verdict({**base, "val_scope": whole})
    assert lines[0] == "val/psnr 31.00 dB | blurry input 28.00 dB (+3.00) | spike floor 31.50 dB (-0.50)   val/ssim 0.9000"
    assert lines[1] == ("verdict on the whole val split (32 frames of 2 clips at 128x128, full frames): "
                        "beats the input; does NOT beat the spike floor")
    subset = _verdict({**base, "val_scope": {**whole, "scored": 6, "size": [64, 64], "whole_split": False}})
    assert subset[1].startswith("NOT a verdict: measured on a subset (6 frames at 64x64) of the val split (32 frames")
