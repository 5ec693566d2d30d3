"""Scoring a checkpoint, or a non-learned spike reading, on a whole split: `evaluate`, what `evaluate.py` does."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader

from vrt_spike.tables import write_csv
from vrt_spike.data.splits import Split
from vrt_spike.data.writers import to_uint8, write_png
from vrt_spike.lit.checkpoint_loading import load_for_inference
from vrt_spike.lit.module import FRAME_METRICS, score_frames, summarise_frames
from vrt_spike.lit.runtime import set_tf32
from vrt_spike.models.spike_floor import FLOOR_METHODS
from vrt_spike.restore import describe_tile

__all__ = ["evaluate", "SavePredictions"]


class SavePredictions(Callback):
    """Writes each restored test frame to ``<out_dir>/<clip>/<frame:06d>.png``."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        for s, clip in enumerate(batch["clip"]):
            for t, frame in enumerate(to_uint8(outputs[s])):
                write_png(self.out_dir / clip / f"{int(batch['frame_start'][s]) + t:06d}.png", frame)


def _write_csv(path: Path, rows: list[dict[str, Any]], keys: list[str], names: dict[str, str]) -> None:
    """``rows``' ``keys`` columns, then each metric ``m`` of ``names`` as the column ``names[m]``."""
    write_csv(path, [*keys, *names.values()],
              ({**{k: r[k] for k in keys}, **{name: r[m] for m, name in names.items()}} for r in rows))


EVAL_SPLITS = ("val", "test")


def _split_loader(cfg: DictConfig, split: str) -> tuple[DataLoader, Split]:
    """The DataModule's loader of ``split`` (val or test): every whole clip of it, one per batch, with
    the spike floor; the frames validation (val) and ``test=true`` (test) score in a training run."""
    # The DataModule only builds the embedded synthetic set when it is missing (data.build_if_missing).
    datamodule = hydra.utils.instantiate(cfg.data, cache=False, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("validate" if split == "val" else "test")
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    return loader, datamodule.splits[split]


def _floor_frames(loader: DataLoader) -> list[dict[str, Any]]:
    """Per-frame rows of the non-learned spike reading the loader carries (no network, no Lightning)."""
    rows: list[dict[str, Any]] = []
    for batch in loader:
        rows += score_frames(batch["spike_floor"], batch)
    return rows


def evaluate(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-clip and mean PSNR/SSIM on ``cfg.split`` (test by default; val gives a run's val figure):
    printed, and written to ``out_csv``, every figure named by the split it scores (``test/psnr``,
    ``val/psnr``, ...) as the module logs it. The returned ``clips`` and ``mean`` are keyed by metric,
    beside ``split``.

    ``method=checkpoint`` (default) scores ``ckpt_path``; ``method=sdm|tfp`` scores that non-learned
    reading of the spike stream (:mod:`vrt_spike.models.spike_floor`) on the same frames. Every
    restored frame stands beside its blurry input and the spike floor (``data.spike_floor``).
    A train.py checkpoint brings its run's spike settings (:func:`load_for_inference`, which reads
    ``overrides``: the command line's, default this Hydra run's).
    """
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    set_tf32(cfg.get("tf32", True))
    method = cfg.get("method", "checkpoint")
    split_role = str(cfg.get("split", "test"))
    if split_role not in EVAL_SPLITS:
        raise ValueError(f"evaluate.py split must be one of {EVAL_SPLITS}, got {split_role!r}")
    restored = "no network"
    if method in FLOOR_METHODS:
        with open_dict(cfg):
            cfg.data.spike_floor = method
        loader, split = _split_loader(cfg, split_role)
        frames, is_zero = _floor_frames(loader), True
    elif method == "checkpoint":
        if cfg.get("ckpt_path") is None:
            raise ValueError("evaluate.py method=checkpoint needs ckpt_path=<file> (a train.py .ckpt or an official VRT "
                             "release); or score a non-learned spike reading with method=sdm or method=tfp")
        module = load_for_inference(cfg, overrides)
        with open_dict(cfg):
            cfg.model = module.hparams.model  # the network the checkpoint holds
        callbacks: list[Callback] = [SavePredictions(output_dir / "images")] if cfg.save_images else []
        trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks)
        loader, split = _split_loader(cfg, split_role)
        module.scored_split = split_role
        # Lightning's own table would head val figures "Test metric": the one below names the split.
        trainer.test(module, dataloaders=loader, verbose=False)
        frames, is_zero = module.test_frames, trainer.is_global_zero
        restored = describe_tile(module.hparams.tile)
    else:
        raise ValueError(f"evaluate.py method must be checkpoint or one of {FLOOR_METHODS}, got {method!r}")
    clips, mean = summarise_frames(frames)
    n = len(frames)
    rows = [*clips, {"clip": "mean (all frames)", "frames": n, **mean}]
    if is_zero:
        names = {m: f"{split_role}/{m}" for m in FRAME_METRICS if m in mean}
        out_csv = Path(cfg.out_csv)
        _write_csv(out_csv, rows, ["clip", "frames"], names)
        _write_csv(out_csv.with_name(out_csv.stem + "_frames.csv"), frames, ["clip", "frame"], names)
        width = max(len(r["clip"]) for r in rows)
        print(f"\n{method if method != 'checkpoint' else cfg.ckpt_path} on the {split.describe()} split "
              f"({restored})")
        print(f"{'clip':<{width}}  frames  " + "  ".join(f"{name:>11}" for name in names.values()))
        for r in rows:
            print(f"{r['clip']:<{width}}  {r['frames']:>6}  " + "  ".join(
                f"{r[m]:>{max(11, len(name))}.{4 if m == 'ssim' else 2}f}" for m, name in names.items()))
        print(f"written: {out_csv}", flush=True)
    return {"clips": clips, "mean": mean, "csv": str(cfg.out_csv), "split": split.describe()}
