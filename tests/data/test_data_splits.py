"""Splits never share a clip: the synthetic val split, GoPro-style validation held out of train."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from vrt_spike.data import layout
from vrt_spike.data.datamodule import SpikeDeblurDataModule
from vrt_spike.data.splits import Split, SplitError, held_out, resolve_splits

# GoPro_Large's 22 training clip names (their sorted order is what a count picks from).
GOPRO_TRAIN = [
    "GOPR0372_07_00", "GOPR0372_07_01", "GOPR0374_11_00", "GOPR0374_11_01", "GOPR0374_11_02", "GOPR0374_11_03",
    "GOPR0378_13_00", "GOPR0379_11_00", "GOPR0380_11_00", "GOPR0384_11_01", "GOPR0384_11_02", "GOPR0384_11_03",
    "GOPR0384_11_04", "GOPR0385_11_00", "GOPR0386_11_00", "GOPR0477_11_00", "GOPR0857_11_00", "GOPR0868_11_01",
    "GOPR0868_11_02", "GOPR0871_11_01", "GOPR0881_11_00", "GOPR0884_11_00",
]
GOPRO_TEST = ["GOPR0384_11_00", "GOPR0384_11_05", "GOPR0396_11_00", "GOPR0868_11_00"]


def _layout(root: Path, splits: dict[str, list[str]]) -> Path:
    """Clip directories only: what split resolution reads."""
    for split, names in splits.items():
        for name in names:
            (root / layout.sharp_dir(split, name)).mkdir(parents=True)
    return root


def test_synthetic_manifest_splits_are_disjoint(tiny_root: Path) -> None:
    splits = resolve_splits(tiny_root)  # the datamodule's defaults: train / val / test directories
    assert {r: s.clips for r, s in splits.items()} == {
        "train": ("synth_train_000", "synth_train_001"), "val": ("synth_val_000",), "test": ("synth_test_000",)}
    names = [n for s in splits.values() for n in s.clips]
    assert len(names) == len(set(names))
    assert splits["val"].describe() == "val" and not splits["val"].held_out


def test_gopro_layout_holds_validation_out_of_train(tmp_path: Path) -> None:
    root = _layout(tmp_path, {"train": GOPRO_TRAIN, "test": GOPRO_TEST})
    splits = resolve_splits(root, val_split="train", val_clips=2)
    # a count: the centres of 2 equal runs of the 22 sorted names, positions 5 and 16
    assert splits["val"].clips == (GOPRO_TRAIN[5], GOPRO_TRAIN[16]) == ("GOPR0374_11_03", "GOPR0857_11_00")
    assert splits["val"].held_out and splits["val"].describe() == "val (2 clips held out of train)"
    assert len(splits["train"].clips) == 20 and not set(splits["train"].clips) & set(splits["val"].clips)
    assert splits["test"].clips == tuple(sorted(GOPRO_TEST))
    assert resolve_splits(root, val_split="train", val_clips=2) == splits  # deterministic
    named = resolve_splits(root, val_split="train", val_clips=["GOPR0884_11_00", "GOPR0372_07_00"])
    assert named["val"].clips == ("GOPR0372_07_00", "GOPR0884_11_00") and len(named["train"].clips) == 20
    assert held_out(GOPRO_TRAIN, 3, "train") == [GOPRO_TRAIN[3], GOPRO_TRAIN[11], GOPRO_TRAIN[18]]


def test_a_clip_in_two_splits_is_refused(tmp_path: Path) -> None:
    root = _layout(tmp_path / "a", {"train": GOPRO_TRAIN[:4], "test": GOPRO_TEST})
    with pytest.raises(SplitError, match=r"4 clips are in two splits, val .*test_GT.* and test .*test_GT.*"
                                         r"data.val_split must not be the test split \(test\)"):
        resolve_splits(root, val_split="test")
    with pytest.raises(SplitError, match=r"4 clips are in two splits, train .* and val .*: \['GOPR0372_07_00'.*"
                                         r"hold validation clips out of train with data.val_clips"):
        resolve_splits(root, val_split="train")
    shared = _layout(tmp_path / "b", {"train": ["A", "B", "C"], "val": ["V"], "test": ["C", "T"]})
    with pytest.raises(SplitError, match=r"1 clips are in two splits, train .* and test .*: \['C'\]"):
        resolve_splits(shared)


def test_only_the_needed_splits_must_exist(tmp_path: Path) -> None:
    """A test-only dataset evaluates (no train directory); fitting it names the missing directory."""
    root = _layout(tmp_path, {"test": ["T1", "T2"]})
    assert list(resolve_splits(root, needed=("test",))) == ["test"]
    assert list(resolve_splits(root, val_split="train", val_clips=1, needed=("test",))) == ["test"]
    with pytest.raises(FileNotFoundError, match=r"train_GT: missing split directory"):
        resolve_splits(root, needed=("train", "val"))


def test_bad_held_out_lists_name_the_problem(tmp_path: Path) -> None:
    root = _layout(tmp_path, {"train": ["A", "B", "C"], "val": ["V"], "test": ["T"]})
    with pytest.raises(SplitError, match=r"1 clips not in .*train_GT: \['Z'\]"):
        resolve_splits(root, val_split="train", val_clips=["A", "Z"])
    with pytest.raises(SplitError, match=r"val_clips=3: expected 1 <= count < 3"):
        resolve_splits(root, val_split="train", val_clips=3)
    with pytest.raises(SplitError, match=r"data.val_clips=1 holds clips out of the training split, but "
                                         r"data.val_split='val' is not data.train_split='train'"):
        resolve_splits(root, val_clips=1)
    with pytest.raises(FileNotFoundError, match=r"nowhere_GT: missing split directory"):
        resolve_splits(root, val_split="nowhere")


def test_datamodule_validates_on_held_out_training_clips(tiny_root: Path, tmp_path: Path) -> None:
    """A GoPro-layout copy with train and test only: val = one training clip, which training no longer sees."""
    root = tmp_path / "gopro"
    shutil.copytree(tiny_root, root, ignore=shutil.ignore_patterns("*val*", "manifest.json"))
    dm = SpikeDeblurDataModule(str(root), clip_len=3, crop_size=16, num_bins=4, batch_size=2, num_workers=0,
                               cache=False, val_split="train", val_clips=["synth_train_001"], spike_floor="sdm")
    dm.setup("fit")
    assert [c.name for c in dm.data_train.clips] == ["synth_train_000"]
    assert [c.name for c in dm.data_val.clips] == ["synth_train_001"]
    assert {b["clip"][0] for b in dm.train_dataloader()} == {"synth_train_000"}
    (val,) = list(dm.val_dataloader())  # one whole clip per batch, full frames, with its floor
    assert val["clip"] == ["synth_train_001"] and val["blur"].shape == (1, 6, 3, 32, 32)
    assert val["spike_floor"].shape == val["blur"].shape and not torch.equal(val["spike_floor"], val["blur"])
    assert dm.resolve_splits()["val"] == Split("val", "train", ("synth_train_001",), held_out=True)
    with pytest.raises(SplitError, match="in two splits"):
        SpikeDeblurDataModule(str(root), num_bins=4, cache=False, val_split="test").setup("fit")
