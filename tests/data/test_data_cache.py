"""HDF5 spike cache: equality with fresh decoding, reuse, invalidation, atomicity."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch

from vrt_spike.data import layout
from vrt_spike.data.cache import CacheError, VoxelCache
from vrt_spike.data.dataset import SpikeDeblurDataset
from vrt_spike.data.representations import represent
from vrt_spike.data.spike_io import read_dat, write_dat

AUG = {"hflip": True, "vflip": True, "rot90": True, "time_reverse": True}


def _pair(root, cache_dir, **kwargs):
    args = {"clip_len": 3, "crop_size": 16, "num_bins": 4, "augment": AUG} | kwargs
    return SpikeDeblurDataset(root, "train", **args), SpikeDeblurDataset(root, "train", cache_dir=cache_dir, **args)


@pytest.mark.parametrize("representation,tfp_window", [("voxel", None), ("tfp", 5)])
def test_cached_samples_equal_fresh_ones(tiny_root, tmp_path, representation, tfp_window):
    fresh, cached = _pair(tiny_root, tmp_path, representation=representation, tfp_window=tfp_window)
    cached.build_cache()
    for i in range(len(fresh)):
        torch.manual_seed(i)
        a = fresh[i]
        torch.manual_seed(i)
        b = cached[i]
        for key in ("blur", "sharp", "spike"):
            assert torch.equal(a[key], b[key]), key
        assert "cache_read" in b["timings"] and "decode_spike" not in b["timings"]
        assert {"decode_spike", "voxelize"} <= a["timings"].keys()


def test_cache_is_reused_not_rebuilt(tiny_root, tmp_path):
    _, ds = _pair(tiny_root, tmp_path)
    path = ds.build_cache()
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    _, again = _pair(tiny_root, tmp_path)
    assert again.cache.path == path and again.build_cache() == path
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left


def test_key_covers_bins_representation_and_spike_size(tiny_copy, tmp_path):
    cache_dir = tmp_path / "cache"
    paths = {
        SpikeDeblurDataset(tiny_copy, "train", clip_len=2, crop_size=None, num_bins=k, representation=r, tfp_window=w, cache_dir=cache_dir).cache.path
        for k, r, w in [(4, "voxel", None), (6, "voxel", None), (4, "tfp", None), (4, "tfp", 3)]
    }
    assert len(paths) == 4
    base = SpikeDeblurDataset(tiny_copy, "train", clip_len=2, crop_size=None, num_bins=4, cache_dir=cache_dir).cache.path
    assert "voxel-K4-16x16" in base.name
    # a different spike size: the same 384-byte files read as 6 frames of 32x16 (full frames allow
    # any ratio), and the cache key follows
    layout.config_path(tiny_copy).write_text("spike_h: 32\nspike_w: 16\n")
    other = SpikeDeblurDataset(tiny_copy, "train", clip_len=2, crop_size=None, num_bins=4, cache_dir=cache_dir).cache.path
    assert other != base and "voxel-K4-32x16" in other.name


def test_changed_spike_file_invalidates(tiny_copy, tmp_path):
    fresh, cached = _pair(tiny_copy, tmp_path, crop_size=None, augment=None)
    old_path, old_key = cached.build_cache(), cached.cache.key
    dat = tiny_copy / layout.spike_dir("train", "synth_train_000") / "000001.dat"
    spikes = read_dat(dat, 16, 16)
    write_dat(dat, 1 - spikes)  # same size, new content
    os.utime(dat, ns=(dat.stat().st_atime_ns, dat.stat().st_mtime_ns + 1_000_000_000))
    fresh, cached = _pair(tiny_copy, tmp_path, crop_size=None, augment=None)
    assert cached.cache.path != old_path
    cached.build_cache()
    assert torch.equal(cached[0]["spike"], fresh[0]["spike"])
    new = represent(1 - spikes, 4)
    np.testing.assert_array_equal(cached.cache.read("synth_train_000", 1, 2)[0], new)
    np.testing.assert_array_equal(VoxelCache(old_path, old_key).read("synth_train_000", 1, 2)[0], represent(spikes, 4))


def test_key_mismatch_and_missing_cache_are_errors(tiny_root, tmp_path):
    _, ds = _pair(tiny_root, tmp_path)
    with pytest.raises(FileNotFoundError, match=str(ds.cache.path) + ".*prepare_data"):
        ds[0]
    path = ds.build_cache()
    with h5py.File(path, "r+") as f:
        f.attrs["key"] = "something else"
    with pytest.raises(CacheError, match="expected .*got something else"):
        VoxelCache(path, ds.cache.key).read("synth_train_000", 0, 1)
