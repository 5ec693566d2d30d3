"""What ``predict.py`` does: restore footage that has no ground truth and write frames and a video.

Each clip is decoded whole (:func:`vrt_spike.data.footage.read_clip`, as evaluation decodes it),
restored by :meth:`DeblurModule.restore` (the path of validation and ``evaluate.py``), and written
as ``<out_dir>/<clip>/<stem>.png`` at the input's size plus a side-by-side ``<out_dir>/<clip>.mp4``:
blurred | restored | spike floor. The floor panel is optional: pass ``floor_frames``, a
non-learned reading of one exposure's raw spikes, to :func:`predict_footage`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import repeat
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm import tqdm

from vrt_spike.data.footage import SpikeReading, folder_clip, read_clip, read_spikes
from vrt_spike.data.layout import Clip, discover
from vrt_spike.data.transforms import upsample_spike
from vrt_spike.data.writers import side_by_side, to_uint8, write_mp4, write_png
from vrt_spike.lit.module import DeblurModule
from vrt_spike.lit.checkpoint_loading import load_for_inference
from vrt_spike.lit.runtime import set_tf32
from vrt_spike.restore import forward_calls
from vrt_spike.timing.clock import now_s
from vrt_spike.timing.memory import PeakMemory

__all__ = ["FloorFrames", "input_clips", "floor_panel", "predict_footage", "predict"]

# A non-learned spike reading (e.g. TFP): one exposure's raw spikes ``(N, h, w)`` 0/1 uint8 ->
# an ``(h, w)`` float image in [0, 1] on the spike grid.
FloorFrames = Callable[[np.ndarray], np.ndarray]


def input_clips(input_cfg: Mapping[str, Any], *, drop_partial: bool = False) -> list[Clip]:
    """The clips named by ``input.*``: ``blur_dir`` + ``spike_dir`` + ``spike_hw`` when ``blur_dir``
    is set (``root`` is then ignored), otherwise every clip of ``split`` under ``root``."""
    if input_cfg.get("blur_dir"):
        missing = [k for k in ("spike_dir", "spike_hw") if not input_cfg.get(k)]
        if missing:
            raise ValueError(f"input.blur_dir={input_cfg['blur_dir']} needs {', '.join(f'input.{k}' for k in missing)} "
                             "(the folder of one .dat per frame and the spike frames' [height, width])")
        return [folder_clip(input_cfg["blur_dir"], input_cfg["spike_dir"], list(input_cfg["spike_hw"]),
                            name=input_cfg.get("name"), drop_partial=drop_partial)]
    if not input_cfg.get("root"):
        raise ValueError("input: set input.root (a GoPro-spike dataset root) or input.blur_dir, input.spike_dir "
                         "and input.spike_hw (two folders)")
    return discover(input_cfg["root"], str(input_cfg.get("split", "test")), sharp=False, drop_partial=drop_partial)


def floor_panel(clip: Clip, reading: SpikeReading, floor_frames: FloorFrames) -> Tensor:
    """``floor_frames`` of every exposure of ``clip`` as a grey ``(T, 3, H, W)`` clip on the RGB grid."""
    images = []
    for i in range(len(clip)):
        image = np.asarray(floor_frames(read_spikes(clip, i, reading)), dtype=np.float32)
        if image.shape != clip.spike_size:
            raise ValueError(f"floor_frames on {clip.spike[i]}: expected an image of the spike size "
                             f"{clip.spike_size}, got shape {image.shape}")
        images.append(image)
    grey = upsample_spike(np.stack(images)[:, None], clip.rgb_size, reading.upsample)  # (T, 1, H, W)
    return repeat(torch.from_numpy(np.clip(grey, 0, 1)), "t 1 h w -> t c h w", c=3)


def _check_reading(module: DeblurModule, reading: SpikeReading) -> None:
    expected = module.hparams.model.get("num_bins")
    if module.use_spike and expected is not None and int(expected) != reading.num_bins:
        raise ValueError(f"data.num_bins={reading.num_bins}, but the checkpoint's network takes num_bins={expected} "
                         f"spike channels: set data.num_bins={expected} (and the training run's data.representation)")


@torch.no_grad()
def predict_footage(
    module: DeblurModule,
    clips: Sequence[Clip],
    reading: SpikeReading,
    out_dir: str | Path,
    *,
    device: torch.device,
    video_fps: float | None = 10.0,
    floor_frames: FloorFrames | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Restore ``clips`` and write ``<out_dir>/<clip>/<stem>.png`` and ``<out_dir>/<clip>.mp4``.

    Args:
        module: the network (``module.restore``), moved to ``device`` and put in eval mode here.
        reading: the spike representation the network was trained on.
        video_fps: frame rate of the side-by-side video; None writes no video.
        floor_frames: the non-learned spike reading of the video's third panel, or None for two panels.
        progress: show a progress bar (network calls, with frames/s).

    Returns ``{"clips": [{"clip", "frames", "seconds", "frames_dir", "video"}], "frames", "seconds",
    "frames_per_s", "peak_memory"}``.
    """
    _check_reading(module, reading)
    out_dir = Path(out_dir)
    module = module.to(device).eval()
    # The peak while restoring: CUDA allocated, or on a CPU the process's peak RSS (the model and the
    # decoded clips included).
    memory = PeakMemory(device)
    memory.reset()
    calls = sum(forward_calls(len(c), *c.rgb_size, module.hparams.tile) for c in clips)
    bar = tqdm(total=calls, unit="call", desc="restoring", disable=not progress, dynamic_ncols=True)

    def count_call(*_: Any) -> None:  # a forward hook's return value would replace the output
        bar.update(1)

    hook = module.net.register_forward_hook(count_call)
    reports, done, start = [], 0, now_s()
    try:
        for clip in clips:
            bar.set_description(clip.name)
            clip_start = now_s()
            sample = read_clip(clip, reading)
            blur, spike = sample["blur"][None].to(device), sample["spike"][None].to(device)
            restored = module.restore(blur, spike).clamp(0, 1).float()[0].cpu()  # as DeblurModule.test_step
            frames = to_uint8(restored)
            for stem, image in zip(clip.stems, frames):
                write_png(out_dir / clip.name / f"{stem}.png", image)
            video = None
            if video_fps:
                panels = [to_uint8(sample["blur"]), frames]
                if floor_frames is not None:
                    panels.append(to_uint8(floor_panel(clip, reading, floor_frames)))
                video = out_dir / f"{clip.name}.mp4"
                write_mp4(video, side_by_side(panels), video_fps)
            done += len(clip)
            seconds = now_s() - clip_start
            bar.set_postfix_str(f"{done / (now_s() - start):.2f} frames/s")
            reports.append({"clip": clip.name, "frames": len(clip), "seconds": seconds,
                            "frames_dir": str(out_dir / clip.name), "video": None if video is None else str(video)})
    finally:
        hook.remove()
        bar.close()
    seconds = now_s() - start
    return {"clips": reports, "frames": done, "seconds": seconds, "frames_per_s": done / seconds,
            "peak_memory": f"{memory.read() / 2**20:.0f} MiB "
                           f"({'CUDA allocated' if device.type == 'cuda' else 'process peak RSS'})"}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def predict(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """``predict.py``: load ``ckpt_path``, restore ``input.*``, write under ``out_dir``, print a summary.

    A train.py checkpoint brings its run's spike settings (``data.*``, :func:`load_for_inference`;
    ``overrides``: the command line's, default this Hydra run's).
    """
    torch.manual_seed(int(cfg.seed))
    set_tf32(cfg.get("tf32", True))
    module = load_for_inference(cfg, overrides)
    reading = SpikeReading.from_data_config(cfg.data)
    input_cfg = OmegaConf.to_container(cfg.input, resolve=True)
    clips = input_clips(input_cfg, drop_partial=reading.drop_partial)
    summary = predict_footage(module, clips, reading, cfg.out_dir, device=_device(str(cfg.device)),
                              video_fps=float(cfg.video.fps) if cfg.video.enabled else None)
    for r in summary["clips"]:
        print(f"{r['clip']}: {r['frames']} frames -> {r['frames_dir']}/" + (f", {r['video']}" if r["video"] else ""))
    print(f"restored {summary['frames']} frames of {len(summary['clips'])} clips in {summary['seconds']:.1f} s "
          f"({summary['frames_per_s']:.2f} frames/s), peak memory {summary['peak_memory']}", flush=True)
    return summary
