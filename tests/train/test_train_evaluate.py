"""evaluate.py: per-clip and mean PSNR/SSIM CSV, PNGs, tiling, an official VRT checkpoint; val figures that
evaluate.py reproduces, and test=true on the checkpoint selected on val; evaluate.py and predict.py read spikes
with the checkpoint's run's data settings."""
from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from train_support import SYNTH, run_script, tiny_overrides

from vrt_spike.lit.checkpoint_loading import CHECKPOINT_DATA_KEYS, TILE_FROM_CHECKPOINT, load_for_inference
from vrt_spike.lit.evaluation import evaluate
from vrt_spike.lit.training import train
from vrt_spike.predict import predict

# The run trains with fewer voxel bins than conf/data's 32: evaluate and predict must read the spikes
# as the run did without being told.
TRAINED_NUM_BINS = 8


def _read(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def selected(compose_cfg, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """4 steps with data.num_bins=8, validated at steps 2 and 4 (both checkpoints kept), then test=true."""
    run_dir = tmp_path_factory.mktemp("selected")
    cfg = compose_cfg("train", [*tiny_overrides(synthetic_root, steps=4), f"paths.output_dir={run_dir}",
                                f"data.num_bins={TRAINED_NUM_BINS}", "trainer.val_check_interval=2",
                                "callbacks.checkpoint_best.save_top_k=-1", "test=true"])
    return train(cfg)


@pytest.fixture(scope="module")
def trained(selected: dict) -> Path:
    return Path(selected["run_dir"]) / "checkpoints" / "last.ckpt"


def test_evaluate_and_predict_restore_with_the_window_the_checkpoint_carries(compose_cfg, trained: Path) -> None:
    shipped = compose_cfg("train", ["paths.output_dir=/tmp/unused"]).module.tile
    saved = torch.load(trained, map_location="cpu", weights_only=False)["hyper_parameters"]["tile"]
    assert saved == OmegaConf.to_container(shipped) and saved["tile"][0] >= 2  # train.yaml's window, in the checkpoint
    for name in ("evaluate", "predict"):
        cfg = compose_cfg(name, [f"ckpt_path={trained}", "paths.output_dir=/tmp/unused"])
        assert cfg.module.tile == TILE_FROM_CHECKPOINT and load_for_inference(cfg).hparams.tile == saved
    other = "module.tile={tile: [4, 0, 0], tile_overlap: [0, 0, 0]}"
    cfg = compose_cfg("evaluate", [f"ckpt_path={trained}", "paths.output_dir=/tmp/unused", other])
    assert load_for_inference(cfg).hparams.tile == {"tile": [4, 0, 0], "tile_overlap": [0, 0, 0]}


def _eval_overrides(root: Path, out: Path) -> list[str]:
    return [f"paths.output_dir={out}", f"data.root={root}", *[f"data.synthetic.{k}={v}" for k, v in SYNTH.items()], "data.clip_len=2", "data.eval_crop_size=40",
            "data.num_workers=0", "data.persistent_workers=false", "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false", "trainer.precision=32"]


def test_evaluate_lightning_checkpoint(compose_cfg, trained: Path, synthetic_root: Path, tmp_path: Path, capsys) -> None:
    cfg = compose_cfg("evaluate", [*_eval_overrides(synthetic_root, tmp_path), f"ckpt_path={trained}", "save_images=true"])
    result = evaluate(cfg)
    rows = _read(tmp_path / "metrics.csv")
    frames = _read(tmp_path / "metrics_frames.csv")
    assert [r["clip"] for r in rows[:-1]] == sorted({f["clip"] for f in frames}) and len(rows) == 3  # 2 clips + mean
    assert len(frames) == 2 * 6   # every frame of the 2 test clips, once
    mean = rows[-1]
    assert mean["clip"] == "mean (all frames)" and int(mean["frames"]) == 12
    assert all(float(f["test/psnr_spike_floor"]) > 0 for f in frames)  # the floor beside every restored frame
    for m in ("psnr", "ssim", "psnr_input", "psnr_spike_floor"):
        assert float(mean[f"test/{m}"]) == pytest.approx(sum(float(f[f"test/{m}"]) for f in frames) / 12, rel=1e-6)
        assert float(mean[f"test/{m}"]) == pytest.approx(result["mean"][m], rel=1e-6)
    for r in rows[:-1]:
        clip_frames = [float(f["test/psnr"]) for f in frames if f["clip"] == r["clip"]]
        assert float(r["test/psnr"]) == pytest.approx(sum(clip_frames) / len(clip_frames), rel=1e-6)
    assert len(list((tmp_path / "images").rglob("*.png"))) == 12
    out = capsys.readouterr().out
    assert "mean (all frames)" in out and "test/psnr_spike_floor" in out


def test_val_figure_equals_evaluate_on_the_val_split(compose_cfg, selected: dict, synthetic_root: Path, tmp_path: Path,
                                                     capsys) -> None:
    """One restoration for every score: each checkpoint's val/psnr (logged in training, restored as its
    module.tile says) is what `evaluate.py split=val` gives on the same checkpoint, within 0.01 dB; and
    every figure it logs, prints and writes is named val/..., none test/...."""
    checkpoints = sorted((Path(selected["run_dir"]) / "checkpoints").glob("best-*.ckpt"))
    assert len(checkpoints) == 2  # the validations at steps 2 and 4
    scores = {}
    for i, path in enumerate(checkpoints):
        # the score the checkpoint was selected by, as the checkpoint callback recorded it when saving this file
        state = torch.load(path, map_location="cpu", weights_only=False)["callbacks"]
        (saved,) = [s["best_k_models"] for k, s in state.items() if k.startswith("ModelCheckpoint") and "val/psnr" in k]
        scores[str(path)] = float(saved[str(path)])
        out = tmp_path / str(i)
        logger = f"trainer.logger={{_target_: lightning.pytorch.loggers.CSVLogger, save_dir: {out / 'logged'}}}"
        cfg = compose_cfg("evaluate", [*_eval_overrides(synthetic_root, out), f"ckpt_path={path}", "split=val", logger])
        result = evaluate(cfg)
        assert result["split"] == "val" and result["mean"]["psnr"] == pytest.approx(scores[str(path)], abs=0.01)
        names = [f"val/{m}" for m in ("psnr", "ssim", "psnr_input", "psnr_spike_floor")]
        (logged,) = _read(next((out / "logged").rglob("metrics.csv")))
        assert set(names) <= set(logged) and float(logged["val/psnr"]) == pytest.approx(result["mean"]["psnr"], rel=1e-6)
        for table in ("metrics.csv", "metrics_frames.csv"):
            assert list(_read(out / table)[0])[2:] == names, table
        printed = capsys.readouterr().out
        assert all(name in printed for name in names) and "on the val split" in printed
        assert not any(f"test/{m}" in text for m in ("psnr", "ssim") for text in (printed, *logged))
    assert selected["best_val_psnr"] == pytest.approx(max(float(v) for v in scores.values()))
    assert selected["best_ckpt"] == max(scores, key=lambda p: float(scores[p]))


def test_test_true_scores_the_val_selected_checkpoint_on_the_test_split(compose_cfg, selected: dict, synthetic_root: Path,
                                                                       tmp_path: Path) -> None:
    assert selected["val_split"] == "val" and selected["test_split"] == "test"
    assert Path(selected["best_ckpt"]).name.startswith("best-")
    cfg = compose_cfg("evaluate", [*_eval_overrides(synthetic_root, tmp_path), f"ckpt_path={selected['best_ckpt']}"])
    result = evaluate(cfg)  # split=test by default
    assert result["split"] == "test"
    for m in ("psnr", "ssim", "psnr_input", "psnr_spike_floor"):
        assert selected[f"test_{m}"] == pytest.approx(result["mean"][m], abs=1e-4), m
    assert selected["test_scope"]["frames"] == 2 * SYNTH["frames"]  # every frame of the test clips
    assert selected["test_psnr_input"] != selected["val_psnr_input"]  # other frames than validation's


def _pngs(folder: Path) -> dict[str, np.ndarray]:
    """``{clip/stem: pixels}`` of every PNG under ``folder``."""
    return {str(p.relative_to(folder).with_suffix("")): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


def test_evaluate_and_predict_read_spikes_as_the_checkpoints_run(compose_cfg, trained: Path, synthetic_root: Path, tmp_path: Path,
                                                                  caplog) -> None:
    """A checkpoint trained with data.num_bins=8 restores the same frames whether data.num_bins=8 is given
    or not (conf/data says 32); evaluate and predict (on a GT-free copy) agree."""
    saved = torch.load(trained, map_location="cpu", weights_only=False)["datamodule_hyper_parameters"]
    assert saved["num_bins"] == TRAINED_NUM_BINS and set(CHECKPOINT_DATA_KEYS) <= set(saved)
    assert compose_cfg("evaluate", ["paths.output_dir=/tmp/unused"]).data.num_bins != TRAINED_NUM_BINS
    gt_free = tmp_path / "no_gt"
    shutil.copytree(synthetic_root, gt_free)
    shutil.rmtree(gt_free / "GOPRO_Large" / "test_GT")
    frames = {}
    for given in ([], [f"data.num_bins={TRAINED_NUM_BINS}"]):
        name = "given" if given else "taken"
        ev = [*_eval_overrides(synthetic_root, tmp_path / f"evaluate_{name}"), "data.eval_crop_size=null",
              f"ckpt_path={trained}", "save_images=true", *given]
        with caplog.at_level(logging.INFO, logger="vrt_spike.lit.checkpoint_loading"):
            evaluate(compose_cfg("evaluate", ev), overrides=ev)
        taken = [r.getMessage() for r in caplog.records if "spike settings of the checkpoint" in r.getMessage()]
        assert len(taken) == 1 and ("data.num_bins=8 (config: 32)" in taken[0]) == (not given), taken  # logged once
        caplog.clear()
        frames[f"evaluate_{name}"] = _pngs(tmp_path / f"evaluate_{name}" / "images")
        pr = [f"ckpt_path={trained}", f"data.root={gt_free}", f"out_dir={tmp_path / f'predict_{name}'}", "device=cpu",
              "video.enabled=false", f"paths.output_dir={tmp_path}", *given]
        predict(compose_cfg("predict", pr), overrides=pr)
        # predict names frames by stem (000000), evaluate by index (000000): the synthetic stems are indices
        frames[f"predict_{name}"] = _pngs(tmp_path / f"predict_{name}")
    reference = frames["evaluate_given"]
    assert len(reference) == 2 * SYNTH["frames"]
    for name, got in frames.items():
        assert got.keys() == reference.keys(), name
        for key in reference:
            np.testing.assert_array_equal(got[key], reference[key], err_msg=f"{name} {key}")


def test_a_spike_setting_that_disagrees_with_the_checkpoint_is_refused(compose_cfg, trained: Path, tmp_path: Path) -> None:
    for name in ("evaluate", "predict"):
        overrides = [f"ckpt_path={trained}", f"paths.output_dir={tmp_path}", "data.num_bins=32"]
        with pytest.raises(ValueError, match=r"data\.num_bins=32 is given on the command line, but the checkpoint "
                                             r".*last\.ckpt was trained with data\.num_bins=8"):
            load_for_inference(compose_cfg(name, overrides), overrides)
    for key, value in (("sharp_width", "0.25"), ("spike_upsample", "nearest"), ("representation", "tfp")):
        overrides = [f"ckpt_path={trained}", f"paths.output_dir={tmp_path}", f"data.{key}={value}"]
        with pytest.raises(ValueError, match=rf"data\.{key}={value} is given on the command line"):
            load_for_inference(compose_cfg("evaluate", overrides), overrides)
    # the same values as the checkpoint's, and the settings that do not change what the network reads, may be given
    overrides = [f"ckpt_path={trained}", f"paths.output_dir={tmp_path}", "data.num_bins=8", "data.spike_upsample=bilinear",
                 "data.drop_partial_frames=true", "data.spike_floor=tfp"]
    cfg = compose_cfg("predict", overrides)
    load_for_inference(cfg, overrides)
    assert (cfg.data.num_bins, cfg.data.drop_partial_frames, cfg.data.spike_floor) == (8, True, "tfp")
    # from a real command line: Hydra's overrides (hydra.overrides.task)
    proc = run_script("predict.py", [f"ckpt_path={trained}", "data.num_bins=32", f"hydra.run.dir={tmp_path / 'run'}"],
                      cwd=tmp_path)
    assert proc.returncode != 0 and "data.num_bins=32 is given on the command line" in proc.stderr, proc.stderr[-2000:]


def test_test_true_needs_a_checkpoint_selected_on_val(compose_cfg, synthetic_root: Path, tmp_path: Path) -> None:
    base = [*tiny_overrides(synthetic_root), f"paths.output_dir={tmp_path}", "test=true"]
    with pytest.raises(ValueError, match="test=true scores the checkpoint selected on val/psnr"):
        train(compose_cfg("train", [*base, "~callbacks.checkpoint_best"]))
    with pytest.raises(ValueError, match="read the val split only: ModelCheckpoint monitors 'test/psnr'"):
        train(compose_cfg("train", [*base, "callbacks.checkpoint_best.monitor=test/psnr"]))
    with pytest.raises(ValueError, match="read the val split only: EarlyStopping monitors 'train/loss'"):
        train(compose_cfg("train", [*base, "callbacks.early_stopping.monitor=train/loss"]))


@pytest.mark.slow  # ~8 tiled forwards: over the fast budget on 2 shared cores
def test_evaluate_official_vrt_checkpoint_rgb_only_tiled(compose_cfg, synthetic_root: Path, tmp_path: Path) -> None:
    from vrt_spike.lit.module import build_net

    model_cfg = compose_cfg("train", ["model=tiny", "paths.output_dir=/tmp/unused"]).model
    net = build_net({**model_cfg, "use_spike": False})
    release = tmp_path / "vrt_release.pth"
    torch.save({"params": net.vrt.state_dict()}, release)
    base = [*_eval_overrides(synthetic_root, tmp_path / "out"), "model=tiny", f"ckpt_path={release}"]
    with pytest.raises(ValueError, match="model.use_spike=false"):
        evaluate(compose_cfg("evaluate", base))
    cfg = compose_cfg("evaluate", [*base, "model.use_spike=false", "data.eval_crop_size=48", "trainer.limit_test_batches=1",
                                   "module.tile={tile: [0, 40, 40], tile_overlap: [0, 8, 8]}"])
    result = evaluate(cfg)
    assert [c["frames"] for c in result["clips"]] == [SYNTH["frames"]]  # the first clip, every frame
    # the released weights reproduce the network's output: evaluate's PSNR equals a direct run on the whole clip
    from vrt_spike.data.dataset import SpikeDeblurDataset
    from vrt_spike.models.vrt.tiling import tiled_forward
    from torchmetrics.functional.image import peak_signal_noise_ratio

    ds = SpikeDeblurDataset(synthetic_root, "test", clip_len=SYNTH["frames"], crop_size=48, num_bins=int(cfg.data.num_bins))
    sample = ds[0]
    out = tiled_forward(net.eval(), sample["blur"][None], tile=[0, 40, 40], tile_overlap=[0, 8, 8]).clamp(0, 1)
    psnr = peak_signal_noise_ratio(out[0], sample["sharp"], data_range=1.0, reduction="none", dim=(1, 2, 3))
    frames = _read(tmp_path / "out" / "metrics_frames.csv")
    assert [f["clip"] for f in frames] == [sample["clip"]] * SYNTH["frames"]
    assert [float(f["test/psnr"]) for f in frames] == pytest.approx(psnr.tolist(), abs=1e-4)
