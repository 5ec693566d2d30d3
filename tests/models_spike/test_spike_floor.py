"""The non-learned spike readings (TFP, S-SDM) against hand-computed values and `.dat` files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vrt_spike.data import layout
from vrt_spike.data.footage import ClipDataset, FloorReading, SpikeReading
from vrt_spike.data.spike_io import write_dat
from vrt_spike.models.spike_floor import sdm, short_and_long_rates, spike_floor, tfp, window_weights


def _w(rates: torch.Tensor, center: float, width: float) -> torch.Tensor:
    return window_weights(rates.shape[-3], center, width)


def test_window_weights_pick_the_bins_under_the_window() -> None:
    # Synthetic GT = sub-frame 4 of 8: exactly voxel bin 4 of 8.
    assert window_weights(8, 0.5625, 0.125).tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    # GoPro's middle instant straddles bins 3 and 4 equally.
    assert window_weights(8, 0.5, 0.125).tolist() == [0, 0, 0, 0.5, 0.5, 0, 0, 0]
    # The raw stream (one bin per spike frame): frames 128..159 of 256, 1/32 each.
    w = window_weights(256, 0.5625, 0.125)
    assert torch.nonzero(w).flatten().tolist() == list(range(128, 160))
    assert torch.allclose(w[128:160], torch.full((32,), 1 / 32))
    # Clipped at the exposure's end: the last bin alone.
    assert window_weights(4, 1.0, 0.25).tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize("kwargs", [dict(num_bins=0, center=0.5, width=0.1), dict(num_bins=4, center=1.5, width=0.1),
                                    dict(num_bins=4, center=0.5, width=0.0)])
def test_window_weights_reject_bad_windows(kwargs) -> None:
    with pytest.raises(ValueError, match="must be"):
        window_weights(**kwargs)


def _tiny_stream() -> torch.Tensor:
    """(N=8, 1, 2) spikes: pixel 0 fires in frames 4-5 only, pixel 1 every other frame."""
    s = torch.zeros(8, 1, 2)
    s[4:6, 0, 0] = 1
    s[0::2, 0, 1] = 1
    return s


def test_sdm_by_hand() -> None:
    spikes = _tiny_stream()
    blur = torch.tensor([0.2, 0.4, 0.1]).view(3, 1, 1).expand(3, 1, 2).clone()
    # Window = frames 4..5 (center 5/8, width 2/8).
    out = sdm(blur, spikes, _w(spikes, 0.625, 0.25))
    # pixel 0: short rate 2/2 = 1, long 2/8 = 0.25 -> ratio 4 (eps 1e-4 on both)
    ratio0 = (1 + 1e-4) / (0.25 + 1e-4)
    # pixel 1: short 1/2 (frame 4 fires, 5 does not), long 4/8 -> ratio 1
    expected = torch.stack([blur[:, 0, 0] * ratio0, blur[:, 0, 1] * 1.0], dim=-1).unsqueeze(1).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert out[0, 0, 0] == pytest.approx(0.2 * ratio0, rel=1e-6) and out[1, 0, 0] == 1.0  # 0.4 * 4 clamps


def test_sdm_never_firing_pixel_keeps_the_blur() -> None:
    blur = torch.full((3, 1, 1), 0.3)
    assert torch.allclose(sdm(blur, torch.zeros(16, 1, 1), _w(torch.zeros(16, 1, 1), 0.5, 0.25)), blur)


def test_tfp_by_hand_keeps_the_blurry_chroma() -> None:
    spikes = _tiny_stream()
    blur = torch.tensor([0.3, 0.2, 0.1]).view(3, 1, 1).expand(3, 1, 2).clone()
    luma = 0.299 * 0.3 + 0.587 * 0.2 + 0.114 * 0.1
    out = tfp(blur, spikes, _w(spikes, 0.625, 0.25), threshold=0.5, gain=1.0)
    # pixel 0: rate 1 -> luma 0.5; pixel 1: rate 0.5 -> 0.25; chroma = blur - blur luma
    for x, new_luma in ((0, 0.5), (1, 0.25)):
        assert torch.allclose(out[:, 0, x], blur[:, 0, x] - luma + new_luma, atol=1e-6)
    grey = torch.full((3, 1, 2), 0.4)
    assert torch.allclose(tfp(grey, spikes, _w(spikes, 0.625, 0.25), threshold=0.5), torch.tensor([0.5, 0.25]).expand(3, 1, 2))


def test_rates_are_upsampled_bilinearly_to_the_rgb_grid() -> None:
    rates = torch.tensor([[[0.0, 1.0]]])  # (K=1, 1, 2)
    short, long = short_and_long_rates(rates, window_weights(rates.shape[-3], 0.5, 1.0), size=(2, 4))
    # align_corners=False: 0, 0.25, 0.75, 1 along the width
    assert torch.allclose(short[0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert torch.equal(short, long)


def test_spike_floor_dispatch_and_errors() -> None:
    blur, spikes = torch.full((3, 1, 2), 0.5), _tiny_stream()
    assert torch.equal(spike_floor("sdm", blur, spikes, center=0.5, width=0.25), sdm(blur, spikes, _w(spikes, 0.5, 0.25)))
    with pytest.raises(ValueError, match="must be one of"):
        spike_floor("oracle", blur, spikes, center=0.5, width=0.25)
    with pytest.raises(ValueError, match="blur must be"):
        sdm(torch.zeros(1, 4, 4), spikes, _w(spikes, 0.5, 0.25))
    with pytest.raises(ValueError, match="share their leading dims"):
        sdm(torch.zeros(2, 3, 1, 2), spikes, _w(spikes, 0.5, 0.25))
    with pytest.raises(ValueError, match="threshold > 0"):
        tfp(blur, spikes, _w(spikes, 0.5, 0.25), threshold=0.0)


def _write_camera_dataset(root: Path, bits: np.ndarray, rgb_scale: int) -> np.ndarray:
    """One test clip of one frame: spikes ``bits (N, h, w)`` in the camera's .dat layout (rows
    stored upside down), RGB at ``rgb_scale`` x the spike size. Returns the blur ``(3, H, W)``."""
    from PIL import Image

    n, h, w = bits.shape
    H, W = h * rgb_scale, w * rgb_scale
    rng = np.random.default_rng(0)
    blur = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    for sub, img in (("test_GT", blur), ("test_GT_blurred", blur)):
        d = root / "GOPRO_Large" / sub / "clip"
        d.mkdir(parents=True)
        Image.fromarray(img).save(d / "000000.png")
    spike_dir = root / "GOPRO_Large_spike_seq" / "test" / "clip" / "spike"
    spike_dir.mkdir(parents=True)
    write_dat(spike_dir / "000000.dat", bits, flip=True)
    (root / "GOPRO_Large_spike_seq" / "config.yaml").write_text(f"spike_h: {h}\nspike_w: {w}\n")
    return blur.transpose(2, 0, 1).astype(np.float32) / 255


@pytest.mark.parametrize("rgb_scale", [1, 2])
def test_clip_floor_reads_the_raw_dat_stream(tmp_path: Path, rgb_scale: int) -> None:
    rng = np.random.default_rng(1)
    bits = (rng.random((32, 8, 8)) < 0.3).astype(np.uint8)
    blur = torch.from_numpy(_write_camera_dataset(tmp_path, bits, rgb_scale))
    ds = ClipDataset(layout.discover(tmp_path, "test"), SpikeReading(num_bins=4), floor=FloorReading("sdm", 0.5625, 0.125))
    sample = ds[0]
    # By hand: frames 16..19 (window 4 of 32 at 18/32), over all 32 frames, upsampled bilinearly.
    short = torch.from_numpy(bits[16:20].mean(0, dtype=np.float32))[None, None]
    long = torch.from_numpy(bits.mean(0, dtype=np.float32))[None, None]
    size = blur.shape[-2:]
    up = lambda x: torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)[0]  # noqa: E731
    expected = (blur * (up(short) + 1e-4) / (up(long) + 1e-4)).clamp(0, 1)
    assert sample["spike_floor"].shape == (1, 3, *size)
    assert torch.allclose(sample["spike_floor"][0], expected, atol=1e-5)


def test_floor_reading_from_the_data_config() -> None:
    data = {"spike_floor": "tfp", "sharp_instant": 0.5625, "sharp_width": 0.125, "spike_threshold": 4.0}
    assert FloorReading.from_data_config(data) == FloorReading("tfp", 0.5625, 0.125, 4.0, 1.0)
    assert FloorReading.from_data_config({**data, "spike_floor": None}) is None
    with pytest.raises(ValueError, match="data.spike_floor must be one of"):
        FloorReading.from_data_config({**data, "spike_floor": "best"})
