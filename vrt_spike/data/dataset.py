"""Clips of consecutive frames from a GoPro-spike split, with per-stage loading timings."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from vrt_spike.data import layout
from vrt_spike.data.cache import CacheSpec, VoxelCache, build_cache, cache_file, cache_key
from vrt_spike.data.image_io import read_png
from vrt_spike.data.representations import normalise, spike_counts
from vrt_spike.data.spike_io import read_dat
from vrt_spike.data.transforms import Box, PairedAugment, center_crop_box, full_box, random_crop_box, upsample_spike
from vrt_spike.timing.clock import Laps

__all__ = ["SpikeDeblurDataset", "collate_samples"]


class SpikeDeblurDataset(Dataset):
    """Samples of ``clip_len`` consecutive frames: blur, sharp and the spike representation.

    A sample is a dict ``blur (T, 3, H, W)``, ``sharp (T, 3, H, W)`` float32 in [0, 1],
    ``spike (T, K, H, W)`` float32 in [0, 1] on the RGB grid, ``clip`` (name), ``frame_start``
    (file index of the window's first frame, before any time reversal) and ``timings``
    (milliseconds per loading stage: ``read_png``, ``decode_spike`` + ``voxelize`` or
    ``cache_read``, ``resample``, ``augment``, ``to_tensor``, ``total``; on the host clock,
    `vrt_spike.timing.clock.Laps`). Training reads it; validation and test restore whole clips
    (:class:`vrt_spike.data.footage.ClipDataset`, with the spike floor).

    Args:
        root: dataset root in the GoPro-spike layout.
        split: ``train``, ``val`` or ``test`` (a ``{split}_GT`` directory).
        clips: only these clips of the split (:mod:`vrt_spike.data.splits`: validation held out of
            training), or None for all.
        clip_len: frames per sample.
        crop_size: square RGB crop; None for full frames. Random when ``augment`` is given,
            centred otherwise.
        num_bins: K channels of the spike representation.
        representation: ``voxel`` or ``tfp``.
        tfp_window: TFP window in spike frames (None: ``2 N / K``).
        augment: ``PairedAugment`` keyword arguments, or None for no augmentation.
        stride: step between window starts; the last window is aligned to the clip's end so every
            frame is covered.
        spike_upsample: ``nearest`` or ``bilinear`` spike-to-RGB resampling.
        flip_spike_rows: ``.dat`` rows are stored upside down (the camera convention).
        drop_partial_frames: drop a trailing partial spike frame with a warning instead of failing.
        cache_dir: read counts from the HDF5 cache in this directory (built by :meth:`build_cache`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        clips: Sequence[str] | None = None,
        clip_len: int,
        crop_size: int | None,
        num_bins: int,
        representation: str = "voxel",
        tfp_window: int | None = None,
        augment: Mapping[str, bool] | None = None,
        stride: int = 1,
        spike_upsample: str = "nearest",
        flip_spike_rows: bool = True,
        drop_partial_frames: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {clip_len}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.root, self.split = Path(root), split
        self.clip_len, self.crop_size = clip_len, crop_size
        self.spike_upsample = spike_upsample
        self.augment = PairedAugment(**augment) if augment is not None else None
        self.clips = layout.discover(root, split, drop_partial=drop_partial_frames, clips=clips)
        self.spike_size = self.clips[0].spike_size  # the split's config.yaml: one size for every clip
        self.spec = CacheSpec(representation, num_bins, tfp_window, *self.spike_size, flip_spike_rows, drop_partial_frames)

        self.samples: list[tuple[int, int]] = []
        for i, clip in enumerate(self.clips):
            where = str(self.root / layout.sharp_dir(split, clip.name))
            if len(clip) < clip_len:
                raise ValueError(f"{where}: clip shorter than clip_len: expected >= {clip_len} frames, got {len(clip)}")
            too_few = [n for n in clip.spike_frames if n < num_bins]
            if too_few:
                raise ValueError(
                    f"{clip.spike[clip.spike_frames.index(too_few[0])]}: expected >= num_bins={num_bins} spike frames, got {too_few[0]}"
                )
            if crop_size is not None:  # validate the geometry once, not per sample
                center_crop_box(clip.rgb_size, self.spike_size, crop_size, where)
            starts = list(range(0, len(clip) - clip_len + 1, stride))
            if starts[-1] != len(clip) - clip_len:
                starts.append(len(clip) - clip_len)
            self.samples += [(i, s) for s in starts]

        self.cache: VoxelCache | None = None
        if cache_dir is not None:
            key = cache_key(self.spec, self.clips)
            self.cache = VoxelCache(cache_file(cache_dir, split, self.spec, key), key)

    # ------------------------------------------------------------------ cache

    def build_cache(self) -> Path:
        """Build this dataset's cache file if it does not exist yet; returns its path."""
        if self.cache is None:
            raise ValueError("dataset was created without cache_dir")
        if not self.cache.path.is_file():
            build_cache(self.cache.path, self.spec, self.clips, self.cache.key)
        return self.cache.path

    # ------------------------------------------------------------------ samples

    def __len__(self) -> int:
        return len(self.samples)

    def _box(self, clip: layout.Clip, where: str) -> Box:
        if self.crop_size is None:
            return full_box(clip.rgb_size, self.spike_size)
        if self.augment is not None:
            return random_crop_box(clip.rgb_size, self.spike_size, self.crop_size, where)
        return center_crop_box(clip.rgb_size, self.spike_size, self.crop_size, where)

    def __getitem__(self, index: int) -> dict:
        laps = Laps()
        clip_index, start = self.samples[index]
        clip = self.clips[clip_index]
        stop = start + self.clip_len
        box = self._box(clip, str(self.root / layout.sharp_dir(self.split, clip.name)))
        y0, x0, bh, bw = box.rgb
        blur = np.stack([read_png(p, clip.rgb_size)[y0 : y0 + bh, x0 : x0 + bw] for p in clip.blur[start:stop]])
        sharp = np.stack([read_png(p, clip.rgb_size)[y0 : y0 + bh, x0 : x0 + bw] for p in clip.sharp[start:stop]])
        laps.lap("read_png")

        if self.cache is not None:
            spike = self.cache.read(clip.name, start, stop, box.spike)
            laps.lap("cache_read")
        else:
            spec = self.spec
            bits = self._read_bits(clip, start, stop, box)
            laps.lap("decode_spike")
            spike = np.stack([normalise(*spike_counts(b, spec.num_bins, spec.representation, spec.tfp_window)) for b in bits])
            laps.lap("voxelize")

        # Flips, rotations and time reversal are views, applied on the spike grid before
        # upsampling (they commute with it), so the large (T, K, H, W) array is written once.
        blur, sharp = blur.transpose(0, 3, 1, 2), sharp.transpose(0, 3, 1, 2)  # (T, 3, H, W) views
        if self.augment is not None:
            params = self.augment.sample(square=bh == bw)
            blur, sharp, spike = self.augment.apply(params, blur, sharp, spike)
        laps.lap("augment")

        spike = upsample_spike(spike, (bh, bw), self.spike_upsample)
        laps.lap("resample")

        blur_t = torch.from_numpy(np.divide(blur, 255, dtype=np.float32))  # contiguous copies
        sharp_t = torch.from_numpy(np.divide(sharp, 255, dtype=np.float32))
        spike_t = torch.from_numpy(np.ascontiguousarray(spike, dtype=np.float32))
        laps.lap("to_tensor")
        sample = {"blur": blur_t, "sharp": sharp_t, "spike": spike_t, "clip": clip.name, "frame_start": start}
        sample["timings"] = {**laps.ms, "total": laps.total_ms()}
        return sample

    def _read_bits(self, clip: layout.Clip, start: int, stop: int, box: Box) -> list[np.ndarray]:
        """Raw spike frames ``(N_i, h, w)`` of frames ``start..stop`` inside the box's spike area."""
        spec, (sy, sx, sh, sw) = self.spec, box.spike
        return [read_dat(p, spec.spike_h, spec.spike_w, flip=spec.flip_rows, drop_partial=spec.drop_partial)
                [:, sy : sy + sh, sx : sx + sw] for p in clip.spike[start:stop]]


def collate_samples(samples: list[Mapping]) -> dict:
    """A batch of :class:`SpikeDeblurDataset` samples: ``default_collate``, except ``timings``.

    ``timings`` becomes ``{stage: [ms of sample 0, ms of sample 1, ...]}`` of plain floats: they
    are host-side measurements, so they stay on the host (a tensor would travel to the device
    with the batch and have to be read back, a host sync in every training step).
    """
    timings = [s["timings"] for s in samples if "timings" in s]
    batch = default_collate([{k: v for k, v in s.items() if k != "timings"} for s in samples])
    if timings:
        if len(timings) != len(samples) or any(t.keys() != timings[0].keys() for t in timings):
            raise ValueError("collate_samples: every sample of a batch must carry the same timings stages, got "
                             f"{[sorted(t) for t in timings]} for {len(samples)} samples")
        batch["timings"] = {stage: [float(t[stage]) for t in timings] for stage in timings[0]}
    return batch
