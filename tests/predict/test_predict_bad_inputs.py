"""Bad footage and checkpoints: errors name the file and the expected and actual value; no half-written files."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from predict_support import write_footage

from vrt_spike.data import layout
from vrt_spike.data.footage import FootageError, folder_clip
from vrt_spike.data.layout import LayoutError
from vrt_spike.atomic import atomic_path
from vrt_spike.data.writers import write_mp4, write_png
from vrt_spike.lit.checkpoint_loading import load_for_inference
from vrt_spike.predict import input_clips, predict


def test_good_folders_give_one_clip(tmp_path: Path) -> None:
    blur, spike = write_footage(tmp_path, ["b", "a"], (24, 40), (12, 20))
    clip = folder_clip(blur, spike, [12, 20])
    assert clip.name == "blur" and clip.stems == ("a", "b") and clip.rgb_size == (24, 40)
    assert clip.spike_size == (12, 20) and clip.spike_frames == (32, 32) and clip.sharp is None


def test_folder_clip_of_a_layout_clip_is_the_layout_clip(synthetic_root: Path) -> None:
    """Two folders and a dataset root go through the one discovery: the same clip, file for file."""
    found = input_clips({"root": str(synthetic_root), "split": "test"})
    assert [c.name for c in found] == ["synth_test_000", "synth_test_001"] and all(c.sharp is None for c in found)
    for clip in found:
        folders = {"blur_dir": str(synthetic_root / layout.blur_dir("test", clip.name)),
                   "spike_dir": str(synthetic_root / layout.spike_dir("test", clip.name))}
        assert input_clips({**folders, "spike_hw": list(clip.spike_size)}) == [clip]


def test_mismatched_stems_list_the_first_few(tmp_path: Path) -> None:
    blur, spike = write_footage(tmp_path, [f"{i:03d}" for i in range(9)], (16, 16), (16, 16))
    for i in range(7):
        (spike / f"{i:03d}.dat").rename(spike / f"x{i:03d}.dat")
    with pytest.raises(FootageError) as err:
        folder_clip(blur, spike, [16, 16])
    msg = str(err.value)
    assert msg.startswith(str(spike)) and str(blur) in msg
    assert "expected one spike .dat per blurred PNG with the same stem, got 9 blurred PNG and 9 spike .dat" in msg
    assert "blurred PNG without spike .dat: 7 ['000', '001', '002', '003', '004'] and 2 more" in msg
    assert "spike .dat without blurred PNG: 7 ['x000', 'x001', 'x002', 'x003', 'x004'] and 2 more" in msg


def test_dat_size_that_does_not_fit_spike_hw(tmp_path: Path) -> None:
    blur, spike = write_footage(tmp_path, ["a", "b"], (16, 16), (16, 16))  # 32 bytes per spike frame
    with open(spike / "b.dat", "ab") as f:
        f.write(b"\0" * 5)
    with pytest.raises(FootageError, match=re.escape(f"{spike / 'b.dat'}: size 1029 bytes is not a whole number of "
                                                     "16×16 spike frames (32 bytes each): expected a multiple of 32, "
                                                     "got 32 frames + 5 bytes (spike size from input.spike_hw)")):
        folder_clip(blur, spike, [16, 16])


def test_rgb_spike_ratio_that_is_not_an_integer(tmp_path: Path) -> None:
    blur, spike = write_footage(tmp_path, ["a"], (24, 30), (16, 16))
    with pytest.raises(ValueError, match=re.escape(f"{blur / 'a.png'} (spike size 16×16 from input.spike_hw): RGB "
                                                   "size 24×30 must be the same integer multiple of the spike size "
                                                   "16×16 in both axes") + r".*got factors 1\.5 and 1\.875"):
        folder_clip(blur, spike, [16, 16])


def test_empty_folders_and_missing_keys(tmp_path: Path) -> None:
    blur, spike = write_footage(tmp_path, ["a"], (16, 16), (16, 16))
    (spike / "a.dat").unlink()
    with pytest.raises(FootageError, match=re.escape(f"{spike}: empty folder: expected one spike stream per blurred "
                                                     "frame (1) (*.dat), got none")):
        folder_clip(blur, spike, [16, 16])
    (blur / "a.png").unlink()
    with pytest.raises(FootageError, match=re.escape(f"{blur}: empty folder: expected blurred RGB frames (*.png)")):
        folder_clip(blur, spike, [16, 16])
    with pytest.raises(ValueError, match=r"input.blur_dir=.* needs input.spike_hw"):
        input_clips({"blur_dir": str(blur), "spike_dir": str(spike)})
    with pytest.raises(FootageError, match=r"input.spike_hw: expected \[height, width\].*got \[16\]"):
        folder_clip(blur, spike, [16])


def test_layout_root_without_clips(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "GOPRO_Large" / "test_GT_blurred").mkdir(parents=True)
    (root / "GOPRO_Large_spike_seq").mkdir()
    (root / "GOPRO_Large_spike_seq" / "config.yaml").write_text("spike_h: 16\nspike_w: 16\n")
    with pytest.raises(LayoutError, match=re.escape(f"{root / 'GOPRO_Large' / 'test_GT_blurred'}: empty folder: "
                                                    "expected clip directories, got none")):
        input_clips({"root": str(root), "split": "test"})


def test_checkpoint_that_is_not_a_checkpoint(compose_cfg, tmp_path: Path) -> None:
    garbage = tmp_path / "notes.ckpt"
    garbage.write_text("garbage, not a checkpoint\n")
    cfg = compose_cfg("predict", [f"ckpt_path={garbage}", "model=tiny", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match=re.escape(f"ckpt_path={garbage}: not a PyTorch checkpoint (expected a "
                                                   "train.py .ckpt or an official VRT release .pth, 26 bytes")):
        load_for_inference(cfg)
    with pytest.raises(FileNotFoundError, match=re.escape(f"ckpt_path: no checkpoint file at {tmp_path / 'none.ckpt'}")):
        load_for_inference(compose_cfg("predict", [f"ckpt_path={tmp_path / 'none.ckpt'}", f"paths.output_dir={tmp_path}"]))


def test_checkpoint_without_its_runs_data_settings_reads_the_config(compose_cfg, tiny_ckpt: Path, tmp_path: Path) -> None:
    """A checkpoint saved before runs' data settings were (no datamodule_hyper_parameters, like ``tiny_ckpt``):
    data.* is read as given, and a num_bins the network does not take is refused."""
    blur_dir, spike_dir = write_footage(tmp_path / "capture", ["a"], (40, 40), (20, 20))
    overrides = [f"ckpt_path={tiny_ckpt}", "input.root=null", f"input.blur_dir={blur_dir}", f"input.spike_dir={spike_dir}",
                 "input.spike_hw=[20,20]", "data.num_bins=8", f"out_dir={tmp_path / 'out'}", "device=cpu",
                 f"paths.output_dir={tmp_path}"]
    cfg = compose_cfg("predict", overrides)
    with pytest.raises(ValueError, match=re.escape("data.num_bins=8, but the checkpoint's network takes num_bins=32 "
                                                   "spike channels: set data.num_bins=32")):
        predict(cfg, overrides)
    assert cfg.data.num_bins == 8 and not (tmp_path / "out").exists()


def test_writers_leave_nothing_behind_on_failure(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_png(tmp_path / "frame.png", np.zeros((4, 4, 3), np.float64))  # PIL has no float RGB mode
    with pytest.raises(ValueError, match="expected .T >= 1, H, W, 3. uint8 frames"):
        write_mp4(tmp_path / "clip.mp4", np.zeros((0, 4, 4, 3), np.uint8), 10)
    with pytest.raises(ValueError, match="expected a frame rate > 0, got fps=0"):
        write_mp4(tmp_path / "clip.mp4", np.zeros((2, 4, 4, 3), np.uint8), 0)
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "clip.mp4") as tmp:
        tmp.write_bytes(b"half a video")  # interrupted while writing
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    write_png(tmp_path / "frame.png", np.zeros((4, 4, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["frame.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "frame.png").stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any new file
