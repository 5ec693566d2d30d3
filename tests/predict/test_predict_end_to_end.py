"""predict.py on real files with the tiny network: GT-free, equal to evaluate.py, odd sizes, videos."""
from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from predict_support import SYNTH, read_png, write_footage

from vrt_spike.lit.checkpoint_loading import load_for_inference
from vrt_spike.lit.evaluation import evaluate
from vrt_spike.data.footage import SpikeReading, read_spikes
from vrt_spike.predict import input_clips, predict, predict_footage

# 3-frame clips in windows of 2 overlapping by 1: every clip is longer than the window.
WINDOWS = "module.tile={tile: [2, 0, 0], tile_overlap: [1, 0, 0]}"


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_gt_free_prediction_equals_evaluate(compose_cfg, tiny_ckpt: Path, synthetic_root: Path, tmp_path: Path) -> None:
    gt_free = tmp_path / "no_gt"
    shutil.copytree(synthetic_root, gt_free)
    shutil.rmtree(gt_free / "GOPRO_Large" / "test_GT")
    out = tmp_path / "predict"
    cfg = compose_cfg("predict", [f"ckpt_path={tiny_ckpt}", f"input.root={gt_free}", f"out_dir={out}", "device=cpu",
                                  f"paths.output_dir={tmp_path}", WINDOWS])
    summary = predict(cfg)
    assert summary["frames"] == 2 * SYNTH["frames"] and summary["frames_per_s"] > 0

    ev = compose_cfg("evaluate", [f"ckpt_path={tiny_ckpt}", f"data.root={synthetic_root}", "save_images=true", "data.build_if_missing=false",
                                  f"paths.output_dir={tmp_path / 'evaluate'}", "data.num_workers=0",
                                  "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", WINDOWS])
    result = evaluate(ev)
    assert sum(c["frames"] for c in result["clips"]) == 2 * SYNTH["frames"]

    blurred = gt_free / "GOPRO_Large" / "test_GT_blurred"
    for clip_dir in sorted(blurred.iterdir()):
        inputs = sorted(clip_dir.glob("*.png"))
        restored = sorted((out / clip_dir.name).glob("*.png"))
        assert [p.name for p in restored] == [p.name for p in inputs]  # one PNG per frame, same stems
        evaluated = sorted((tmp_path / "evaluate" / "images" / clip_dir.name).glob("*.png"))
        assert len(evaluated) == len(restored)
        for src, mine, theirs in zip(inputs, restored, evaluated):
            frame = read_png(mine)
            assert frame.shape == read_png(src).shape == (SYNTH["height"], SYNTH["width"], 3)
            np.testing.assert_array_equal(frame, read_png(theirs))
            assert not np.array_equal(frame, read_png(src))  # the network changed the frame
        video = _decode(out / f"{clip_dir.name}.mp4")
        assert len(video) == len(inputs) and video[0].shape == (SYNTH["height"], 2 * SYNTH["width"], 3)
        # left panel = the blurred input, right = the restored frame (H.264 at crf 18, 4:2:0 chroma on 40-px
        # frames: close, not exact; mean abs error about 6 of 255)
        left, right = video[1][:, : SYNTH["width"]], video[1][:, SYNTH["width"]:]
        assert np.abs(left.astype(int) - read_png(inputs[1])).mean() < 10
        assert np.abs(right.astype(int) - read_png(restored[1])).mean() < 10
    assert list(tmp_path.rglob("*.tmp*")) == []  # no temporary file left behind


@pytest.mark.parametrize(("rgb_hw", "stems"), [((25, 40), ["f0", "f1"]), ((50, 80), ["only"])],
                         ids=["same-size", "rgb-2x-single-frame"])
def test_odd_sizes_are_padded_and_cropped_back(compose_cfg, tiny_ckpt: Path, tmp_path: Path, rgb_hw: tuple[int, int],
                                               stems: list[str]) -> None:
    spike_hw = (25, 40)  # not a multiple of the network's 8, smaller than its 40-px minimum
    blur_dir, spike_dir = write_footage(tmp_path / "capture", stems, rgb_hw, spike_hw)
    cfg = compose_cfg("predict", [f"ckpt_path={tiny_ckpt}", "input.root=null", f"input.blur_dir={blur_dir}",
                                  f"input.spike_dir={spike_dir}", f"input.spike_hw=[{spike_hw[0]},{spike_hw[1]}]",
                                  "input.name=capture", f"paths.output_dir={tmp_path}"])
    module = load_for_inference(cfg)
    seen: list[tuple[int, ...]] = []
    module.net.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)) and None)
    reading = SpikeReading.from_data_config(cfg.data)
    clips = input_clips(cfg.input)
    predict_footage(module, clips, reading, tmp_path / "out", device=torch.device("cpu"), video_fps=5,
                    progress=False, floor_frames=lambda spikes: spikes.mean(0))  # the hook of the video's 3rd panel
    padded = (max(40, -(-rgb_hw[0] // 8) * 8), max(40, -(-rgb_hw[1] // 8) * 8))
    assert seen == [(1, 2, 3, *padded)]  # one window; a 1-frame clip is shown twice
    for stem in stems:
        frame = read_png(tmp_path / "out" / "capture" / f"{stem}.png")
        assert frame.shape == (*rgb_hw, 3)
        assert 0 < frame.std()  # a real image, not a constant fill
    video = _decode(tmp_path / "out" / "capture.mp4")
    assert len(video) == len(stems) and video[0].shape == (rgb_hw[0] + rgb_hw[0] % 2, 3 * rgb_hw[1], 3)
    # third panel: the mean firing rate of the first exposure, nearest-upsampled to the RGB grid, grey
    firing = read_spikes(clips[0], 0, reading).mean(0)
    scale = rgb_hw[0] // spike_hw[0]
    expected = np.repeat(np.repeat(firing, scale, 0), scale, 1) * 255
    floor = video[0][: rgb_hw[0], 2 * rgb_hw[1]:].astype(float)
    assert np.abs(floor.mean(-1) - expected).mean() < 12  # H.264 of random spikes: close, not exact


def test_official_vrt_release_restores_rgb_only(compose_cfg, tmp_path: Path) -> None:
    from vrt_spike.lit.module import build_net

    model = compose_cfg("predict", ["ckpt_path=unused", "model=tiny", "paths.output_dir=/tmp/unused"]).model
    net = build_net({**model, "use_spike": False}).eval()
    release = tmp_path / "vrt_release.pth"
    torch.save({"params": net.vrt.state_dict()}, release)
    blur_dir, spike_dir = write_footage(tmp_path / "capture", ["a", "b"], (40, 48), (40, 48))
    cfg = compose_cfg("predict", [f"ckpt_path={release}", "model=tiny", "model.use_spike=false", "input.root=null",
                                  f"input.blur_dir={blur_dir}", f"input.spike_dir={spike_dir}", "input.spike_hw=[40,48]",
                                  f"out_dir={tmp_path / 'out'}", "video.enabled=false", "device=cpu",
                                  f"paths.output_dir={tmp_path}"])
    summary = predict(cfg)
    assert summary["clips"][0]["video"] is None and not list((tmp_path / "out").glob("*.mp4"))
    blur = torch.stack([torch.from_numpy(read_png(blur_dir / f"{s}.png")) for s in ("a", "b")])
    with torch.no_grad():  # the release's own network on the whole clip
        expected = net(blur.permute(0, 3, 1, 2)[None].float() / 255, None).clamp(0, 1)[0]
    for t, stem in enumerate(("a", "b")):
        got = torch.from_numpy(read_png(tmp_path / "out" / "blur" / f"{stem}.png")).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(got, expected[t], atol=1 / 255, rtol=0)  # PNG rounding
