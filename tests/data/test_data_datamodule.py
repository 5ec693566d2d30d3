"""SpikeDeblurDataModule: the batch contract, prepare_data, configs, workers, sharding."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DistributedSampler

from vrt_spike.data.datamodule import SpikeDeblurDataModule
from vrt_spike.data.synthesize import MANIFEST

KEYS = {"blur", "sharp", "spike", "clip", "frame_start", "timings"}


def _dm(root, **kwargs) -> SpikeDeblurDataModule:
    args = dict(root=str(root), clip_len=3, crop_size=16, num_bins=4, batch_size=2, num_workers=0) | kwargs
    return SpikeDeblurDataModule(**args)


def _data_config(compose_cfg, name: str, data_dir: Path | str) -> DictConfig:
    """``conf/data/<name>.yaml`` composed as the app composes it (with the base in its defaults list)."""
    return compose_cfg(None, [f"+data={name}", f"+paths.data_dir={data_dir}"])


def _check_batch(batch: dict, b: int, t: int, k: int, hw: tuple[int, int], cache: bool) -> None:
    assert set(batch) == KEYS
    for key, c in (("blur", 3), ("sharp", 3), ("spike", k)):
        x = batch[key]
        assert x.shape == (b, t, c, *hw) and x.dtype == torch.float32, key
        assert 0 <= x.min() and x.max() <= 1, key
    assert batch["spike"].max() > 0  # real spikes, not zeros
    assert isinstance(batch["clip"], list) and len(batch["clip"]) == b and all(isinstance(c, str) for c in batch["clip"])
    assert batch["frame_start"].shape == (b,) and batch["frame_start"].dtype == torch.int64
    stages = {"read_png", "resample", "to_tensor", "augment", "total"} | ({"cache_read"} if cache else {"decode_spike", "voxelize"})
    assert set(batch["timings"]) == stages
    for name, ms in batch["timings"].items():  # host floats: they never travel to the device
        assert len(ms) == b and all(isinstance(v, float) and v >= 0 for v in ms), name
    for i in range(b):
        parts = sum(v[i] for n, v in batch["timings"].items() if n != "total")
        assert batch["timings"]["total"][i] >= parts - 1e-6 and batch["timings"]["read_png"][i] > 0


def _check_clip_batch(batch: dict, clip: str, t: int, k: int, hw: tuple[int, int]) -> None:
    """A val/test batch: one whole clip at full frames, no loader timings (they time training)."""
    assert set(batch) == {"blur", "sharp", "spike", "clip", "frame_start"}
    assert batch["clip"] == [clip] and batch["frame_start"].tolist() == [0]
    for key, c in (("blur", 3), ("sharp", 3), ("spike", k)):
        assert batch[key].shape == (1, t, c, *hw) and batch[key].dtype == torch.float32, key
    assert batch["spike"].max() > 0


@pytest.mark.parametrize("cache", [True, False])
def test_batches_follow_the_contract(tiny_root, tmp_path, cache):
    dm = _dm(tiny_root, cache=cache, cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.h5")] == (["train"] if cache else [])
    dm.setup("fit")
    assert len(dm.data_train) == 2 * 4 and len(dm.data_val) == 1  # stride-1 windows; whole val clips
    _check_batch(next(iter(dm.train_dataloader())), 2, 3, 4, (16, 16), cache)
    (val,) = list(dm.val_dataloader())
    _check_clip_batch(val, "synth_val_000", 6, 4, (32, 32))  # every frame of the clip, full frames
    dm.setup("test")
    (test,) = list(dm.test_dataloader())
    _check_clip_batch(test, "synth_test_000", 6, 4, (32, 32))


def test_prepare_data_builds_missing_synthetic_dataset_and_cache_once(tmp_path, tiny_cfg):
    root = tmp_path / "data" / "synthetic"
    dm = _dm(root, build_if_missing=True, synthetic=dataclasses.asdict(tiny_cfg))
    dm.prepare_data()
    assert (root / MANIFEST).is_file()
    caches = sorted((root / "GOPRO_Large_spike_seq" / "spike_vox").glob("*.h5"))
    assert [p.name.split("-")[0] for p in caches] == ["train"]  # val/test restore whole clips from the raw streams
    stamps = [p.stat().st_mtime_ns for p in caches] + [(root / MANIFEST).stat().st_mtime_ns]
    _dm(root, build_if_missing=True, synthetic=dataclasses.asdict(tiny_cfg)).prepare_data()  # second run: reuse
    assert [p.stat().st_mtime_ns for p in caches] + [(root / MANIFEST).stat().st_mtime_ns] == stamps
    dm.setup("fit")
    _check_batch(next(iter(dm.train_dataloader())), 2, 3, 4, (16, 16), cache=True)


def test_missing_root_without_build_is_a_clear_error(tmp_path):
    dm = _dm(tmp_path / "nowhere", cache=False)
    dm.prepare_data()
    with pytest.raises(FileNotFoundError, match="nowhere/GOPRO_Large/train_GT: missing split directory"):
        dm.setup("fit")


@pytest.mark.parametrize("name", ["synthetic", "gopro_spike"])
def test_config_instantiates_the_datamodule(compose_cfg, name, tiny_root):
    cfg = _data_config(compose_cfg, name, "/data")
    assert cfg.data.root.startswith("/data/")
    for key in ("root", "clip_len", "crop_size", "num_bins", "representation", "batch_size", "num_workers",
                "pin_memory", "persistent_workers", "cache"):
        assert key in cfg.data, key
    dm = instantiate(cfg.data, root=str(tiny_root), crop_size=16, num_bins=4, num_workers=0)
    assert isinstance(dm, SpikeDeblurDataModule)
    assert dm.hparams.representation == "voxel" and dm.batch_size == 2


def test_synthetic_config_builds_on_first_use(compose_cfg, tmp_path, tiny_cfg):
    cfg = _data_config(compose_cfg, "synthetic", tmp_path)
    cfg.data.synthetic = dataclasses.asdict(tiny_cfg)
    dm = instantiate(cfg.data, crop_size=16, num_bins=4, num_workers=0, cache=False)
    dm.prepare_data()
    dm.setup("fit")
    assert Path(dm.data_train.root) == tmp_path / "synthetic"
    batch = next(iter(dm.train_dataloader()))
    assert batch["spike"].shape == (2, 5, 4, 16, 16)


def test_worker_processes_and_persistent_workers(tiny_root, tmp_path):
    dm = _dm(tiny_root, cache=True, cache_dir=str(tmp_path), num_workers=1, persistent_workers=True)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 1 and not loader.pin_memory  # no CUDA here
    for _ in range(2):  # two epochs through the same worker (h5py opened lazily in the worker)
        seen = sum(b["blur"].shape[0] for b in loader)
        assert seen == len(dm.data_train)


def test_distributed_sampler_shards_train_samples(tiny_root):
    """What Lightning's default distributed sampler does with our train set under 3 processes."""
    dm = _dm(tiny_root, cache=False)
    dm.setup("fit")
    shards = [list(DistributedSampler(dm.data_train, num_replicas=3, rank=r, shuffle=True, seed=0)) for r in range(3)]
    n = len(dm.data_train)
    assert all(len(s) == -(-n // 3) for s in shards)
    assert set().union(*shards) == set(range(n))
    assert len(set(shards[0]) & set(shards[1])) <= 1  # only padding repeats


def test_val_batches_carry_the_spike_floor_and_train_batches_do_not(tiny_root, tiny_cfg):
    dm = _dm(tiny_root, cache=False, spike_floor="sdm", sharp_instant=0.5, sharp_width=1 / 3)
    dm.setup("fit")
    train, val = next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))
    assert "spike_floor" not in train
    assert val["spike_floor"].shape == val["blur"].shape and 0 <= val["spike_floor"].min() <= val["spike_floor"].max() <= 1
    assert not torch.equal(val["spike_floor"], val["blur"])  # the spikes moved it


def test_sharp_instant_must_match_the_synthetic_manifest(tiny_root, tiny_cfg):
    assert tiny_cfg.sub_frames == 3  # ground truth: sub-frame 1 of 3, centred at 0.5
    dm = _dm(tiny_root, sharp_instant=0.5625)
    with pytest.raises(ValueError, match=r"data.sharp_instant=0.5625 does not match .*sub-frame 1 of sub_frames=3.*"
                                         r"set data.sharp_instant=0.5"):
        dm.setup("fit")


def test_time_reversal_needs_a_centred_ground_truth(tiny_root):
    with pytest.raises(ValueError, match=r"time_reverse=true needs .* got data.sharp_instant=0.5625: reversal would "
                                         r"move it to 0.4375"):
        _dm(tiny_root, sharp_instant=0.5625, augment={"hflip": True, "vflip": True, "rot90": True, "time_reverse": True})
    _dm(tiny_root, sharp_instant=0.5, augment={"hflip": True, "vflip": True, "rot90": True, "time_reverse": True})
