"""LightningDataModule over a GoPro-spike dataset (the embedded synthetic one by default)."""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from vrt_spike.data import layout
from vrt_spike.data import synthesize as synth
from vrt_spike.data.dataset import SpikeDeblurDataset, collate_samples
from vrt_spike.data.footage import ClipDataset, FloorReading, SpikeReading
from vrt_spike.data.splits import Split, resolve_splits

__all__ = ["SpikeDeblurDataModule"]

# The splits each Lightning stage reads (they must exist; the others are checked when present).
STAGE_SPLITS: dict[str | None, tuple[str, ...]] = {
    None: ("train", "val", "test"), "fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}

log = logging.getLogger(__name__)


class SpikeDeblurDataModule(L.LightningDataModule):
    """Training windows of :class:`SpikeDeblurDataset`; whole val and test clips of :class:`ClipDataset`.

    ``__init__`` only stores settings (it runs in every DDP process). ``prepare_data`` (one process
    per node) builds the synthetic dataset when ``build_if_missing`` and the training split's spike
    cache when ``cache``; ``setup`` (every process) resolves the splits (:mod:`vrt_spike.data.splits`:
    no clip in two of them) and indexes them. Training draws ``clip_len``-frame crops; validation
    and test restore every frame of every clip of their split, one whole clip per batch, as
    ``evaluate.py`` and ``predict.py`` do (``module.tile`` sets the temporal window), so a
    checkpoint's val figure is ``evaluate.py split=val``'s. Under DDP Lightning wraps the loaders
    in a ``DistributedSampler`` (shuffled for train), so each rank sees its own shard.

    Args:
        root: dataset root (GoPro-spike layout).
        clip_len: frames per sample (T).
        crop_size: square training crop on the RGB grid (a multiple of the RGB/spike scale).
        num_bins: K spike channels.
        representation: ``voxel`` or ``tfp``; ``tfp_window``: TFP window in spike frames.
        batch_size: per device.
        num_workers, pin_memory, persistent_workers: DataLoader settings (pin memory only with CUDA,
            persistent workers only with ``num_workers > 0``).
        cache: read spike representations from HDF5 caches built in ``prepare_data``.
        cache_dir: where caches live (default ``<root>/GOPRO_Large_spike_seq/spike_vox``).
        build_if_missing: build the synthetic dataset at ``root`` when it is missing.
        synthetic: :class:`~vrt_spike.data.synthesize.SynthConfig` fields for that build.
        augment: ``PairedAugment`` flags for training (``hflip``, ``vflip``, ``rot90``, ``time_reverse``).
        spike_upsample: ``nearest`` or ``bilinear``.
        flip_spike_rows, drop_partial_frames: ``.dat`` reading options.
        train_stride: step between training windows.
        eval_crop_size: centre crop for val/test, or None for full frames.
        train_split, val_split, test_split: split directory names of the layout. Validation selects
            (checkpoints, early stopping, sweeps); test is reported: they never share a clip.
        val_clips: validation held out of the training directory (``val_split == train_split``;
            GoPro-spike has only train/test): a count (evenly spaced over the sorted clip names)
            or a list of clip names; those clips leave training. None: ``val_split`` is a
            directory of its own (the synthetic dataset's ``val``).
        spike_floor: non-learned reading (``sdm`` | ``tfp`` | None) added to val/test samples as
            ``spike_floor`` and scored as ``val/psnr_spike_floor``.
        sharp_instant, sharp_width: where the ground truth sits in each exposure, as fractions of it
            (the floor's window; models read them too). On a synthetic dataset the instant must
            match its manifest: the centre of sub-frame ``N // 2`` of ``N``.
        spike_threshold, spike_gain: camera constants for ``tfp``.
    """

    def __init__(
        self,
        root: str,
        clip_len: int = 5,
        crop_size: int = 64,
        num_bins: int = 8,
        representation: str = "voxel",
        tfp_window: int | None = None,
        batch_size: int = 2,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        cache: bool = True,
        cache_dir: str | None = None,
        build_if_missing: bool = False,
        synthetic: Mapping[str, Any] | None = None,
        augment: Mapping[str, bool] | None = None,
        spike_upsample: str = "nearest",
        flip_spike_rows: bool = True,
        drop_partial_frames: bool = False,
        train_stride: int = 1,
        eval_crop_size: int | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        val_clips: int | Sequence[str] | None = None,
        spike_floor: str | None = None,
        sharp_instant: float = 0.5,
        sharp_width: float = 0.125,
        spike_threshold: float = 2.0,
        spike_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.root = Path(root)
        self.batch_size = batch_size
        self.synth_config = synth.SynthConfig(**dict(synthetic or {}))
        self.augment = dict(augment) if augment is not None else {"hflip": True, "vflip": True, "rot90": True, "time_reverse": False}
        if self.augment.get("time_reverse") and abs(sharp_instant - 0.5) > 1e-6:
            # Reversed, the frame's sharp instant moves to 1 - sharp_instant while its ground truth
            # stays: the sample would teach the model (and its spike prior) the wrong instant.
            raise ValueError(f"data.augment.time_reverse=true needs the ground truth at the exposure's middle "
                             f"(data.sharp_instant=0.5), got data.sharp_instant={sharp_instant}: reversal would move "
                             f"it to {1 - sharp_instant:g}. Set data.augment.time_reverse=false")
        self.splits: dict[str, Split] | None = None
        self.data_train: SpikeDeblurDataset | None = None
        self.data_val: ClipDataset | None = None
        self.data_test: ClipDataset | None = None

    @property
    def cache_dir(self) -> Path | None:
        if not self.hparams.cache:
            return None
        return Path(self.hparams.cache_dir) if self.hparams.cache_dir else self.root / "GOPRO_Large_spike_seq" / "spike_vox"

    def resolve_splits(self, *needed: str) -> dict[str, Split]:
        """The clips of each split on disk (``needed`` ones must exist); a clip in two splits is an error."""
        hp = self.hparams
        return resolve_splits(self.root, train_split=hp.train_split, val_split=hp.val_split, test_split=hp.test_split,
                              val_clips=hp.val_clips, needed=needed)

    def _train_dataset(self, split: Split) -> SpikeDeblurDataset:
        hp = self.hparams
        return SpikeDeblurDataset(
            self.root,
            split.directory,
            clips=split.clips,
            clip_len=hp.clip_len,
            crop_size=hp.crop_size,
            num_bins=hp.num_bins,
            representation=hp.representation,
            tfp_window=hp.tfp_window,
            augment=self.augment,
            stride=hp.train_stride,
            spike_upsample=hp.spike_upsample,
            flip_spike_rows=hp.flip_spike_rows,
            drop_partial_frames=hp.drop_partial_frames,
            cache_dir=self.cache_dir,
        )

    def _clip_dataset(self, split: Split) -> ClipDataset:
        """Every whole clip of a val or test split, at ``eval_crop_size``, with the spike floor."""
        hp = self.hparams
        clips = layout.discover(self.root, split.directory, drop_partial=hp.drop_partial_frames, clips=split.clips)
        return ClipDataset(clips, SpikeReading.from_data_config(hp), crop_size=hp.eval_crop_size,
                           floor=FloorReading.from_data_config(hp))

    def _check_sharp_window(self) -> None:
        """A synthetic dataset knows where its ground truth sits: the configured window must agree."""
        manifest = self.root / synth.MANIFEST
        if not manifest.is_file():
            return
        config = json.loads(manifest.read_text()).get("config", {})
        n = int(config.get("sub_frames", 0))
        if n < 1:
            return
        expected = (n // 2 + 0.5) / n
        if abs(float(self.hparams.sharp_instant) - expected) > 1e-6:
            raise ValueError(f"data.sharp_instant={self.hparams.sharp_instant} does not match {manifest}: its ground "
                             f"truth is sub-frame {n // 2} of sub_frames={n}, centred at {expected:g} of the exposure; "
                             f"set data.sharp_instant={expected:g}")

    def prepare_data(self) -> None:
        """Build what is missing: the synthetic dataset, then the training split's spike cache
        (val and test restore whole clips from the raw streams, as ``predict.py`` reads footage)."""
        if self.hparams.build_if_missing and (not self.root.exists() or (self.root / synth.MANIFEST).exists()):
            if synth.synthesize(self.root, self.synth_config, if_missing=True):
                log.info("built synthetic dataset at %s", self.root)
        if self.hparams.cache:
            self._train_dataset(self.resolve_splits("train")["train"]).build_cache()

    def setup(self, stage: str | None = None) -> None:
        self._check_sharp_window()
        self.splits = self.resolve_splits(*STAGE_SPLITS[stage])
        if stage in (None, "fit") and self.data_train is None:
            self.data_train = self._train_dataset(self.splits["train"])
        if stage in (None, "fit", "validate") and self.data_val is None:
            self.data_val = self._clip_dataset(self.splits["val"])
        if stage in (None, "test", "predict") and self.data_test is None:
            self.data_test = self._clip_dataset(self.splits["test"])

    def _loader(self, dataset: Dataset | None, shuffle: bool, name: str) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{name} dataset not set up: call setup() first")
        hp = self.hparams
        return DataLoader(
            dataset,
            # val/test: one whole clip per batch (clips may differ in length)
            batch_size=self.batch_size if shuffle else 1,
            # The order is drawn from the global RNG when the first batch is fetched (after the
            # module's per-epoch reseed); the loader's own generator feeds only the workers' base
            # seed, so creating an iterator never consumes the global RNG. Lightning creates the
            # first iterator of a resumed run before any hook runs: with the global RNG untouched
            # there, a resumed run draws what the uninterrupted run draws.
            sampler=RandomSampler(dataset) if shuffle else SequentialSampler(dataset),
            generator=torch.Generator(),
            drop_last=shuffle,
            collate_fn=collate_samples,  # loader timings stay on the host
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, True, "train")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, False, "val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, False, "test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, False, "predict")
