"""`.dat` bit layout, round trips, frame ranges and partial frames."""
from __future__ import annotations

import re

import numpy as np
import pytest

from vrt_spike.data.spike_io import SpikeFormatError, count_frames, encode_frames, read_dat, write_dat


def _reference_decode(data: bytes, h: int, w: int, flip: bool) -> np.ndarray:
    """Per-pixel decoding straight from the layout description (slow, obviously correct)."""
    n = len(data) // (h * w // 8)
    out = np.zeros((n, h, w), np.uint8)
    for f in range(n):
        for y in range(h):
            for x in range(w):
                p = y * w + x
                byte = data[f * (h * w // 8) + p // 8]
                out[f, y, x] = (byte >> (p % 8)) & 1
    return out[:, ::-1] if flip else out


def test_single_bit_lands_on_documented_byte_and_bit(tmp_path):
    h, w = 4, 8  # 32 bits = 4 bytes per frame
    y, x = 1, 5  # stored row 1 -> p = 13 -> byte 1, bit 5 (LSB first)
    raw = bytearray(4)
    raw[13 // 8] = 1 << (13 % 8)
    path = tmp_path / "one.dat"
    path.write_bytes(bytes(raw))

    unflipped = read_dat(path, h, w, flip=False)
    assert unflipped.shape == (1, h, w)
    assert unflipped.sum() == 1 and unflipped[0, y, x] == 1

    flipped = read_dat(path, h, w)  # default: rows stored upside down
    assert flipped.sum() == 1 and flipped[0, h - 1 - y, x] == 1


def test_encode_matches_hand_made_bytes():
    spikes = np.zeros((2, 2, 8), np.uint8)
    spikes[0, 0, 0] = 1  # p=0 -> byte 0 bit 0
    spikes[1, 1, 7] = 1  # p=15 -> byte 1 bit 7
    assert encode_frames(spikes, flip=False) == bytes([0x01, 0x00, 0x00, 0x80])
    # flipped: frame 0's top row is stored last
    assert encode_frames(spikes, flip=True) == bytes([0x00, 0x01, 0x80, 0x00])


@pytest.mark.parametrize("flip", [True, False])
def test_round_trip_and_reference_decoder(tmp_path, flip):
    rng = np.random.default_rng(0)
    spikes = (rng.random((5, 6, 12)) < 0.3).astype(np.uint8)
    path = tmp_path / "s.dat"
    write_dat(path, spikes, flip=flip)
    assert path.stat().st_size == 5 * 6 * 12 // 8
    np.testing.assert_array_equal(read_dat(path, 6, 12, flip=flip), spikes)
    np.testing.assert_array_equal(_reference_decode(path.read_bytes(), 6, 12, flip), spikes)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


def test_frame_range_equals_slice_of_full_decode(tmp_path):
    rng = np.random.default_rng(1)
    spikes = (rng.random((20, 8, 16)) < 0.5).astype(np.uint8)
    path = tmp_path / "r.dat"
    write_dat(path, spikes)
    np.testing.assert_array_equal(read_dat(path, 8, 16, start=7, stop=13), spikes[7:13])
    assert read_dat(path, 8, 16, start=20, stop=20).shape == (0, 8, 16)
    with pytest.raises(SpikeFormatError, match=r"r\.dat.*\[18, 25\).*20 frames"):
        read_dat(path, 8, 16, start=18, stop=25)


def test_partial_frame_is_an_error_naming_file_size_and_shape(tmp_path):
    path = tmp_path / "partial.dat"
    path.write_bytes(bytes(3 * 16 + 5))  # 3 frames of 8x16 (16 bytes) + 5 bytes
    with pytest.raises(SpikeFormatError) as err:
        read_dat(path, 8, 16)
    msg = str(err.value)
    assert str(path) in msg and "8×16" in msg and "53 bytes" in msg and "multiple of 16" in msg and "5 bytes" in msg


def test_partial_frame_dropped_explicitly_with_warning(tmp_path):
    spikes = np.ones((2, 8, 16), np.uint8)
    path = tmp_path / "partial.dat"
    path.write_bytes(encode_frames(spikes) + b"\x07\x07")
    with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*dropping"):
        out = read_dat(path, 8, 16, drop_partial=True)
    np.testing.assert_array_equal(out, spikes)
    with pytest.warns(UserWarning):
        assert count_frames(path, 8, 16, drop_partial=True) == 2


def test_frames_must_be_byte_aligned(tmp_path):
    path = tmp_path / "x.dat"
    path.write_bytes(bytes(10))
    with pytest.raises(SpikeFormatError, match="3×5 = 15 bits"):
        read_dat(path, 3, 5)


def test_encode_rejects_non_binary_values():
    with pytest.raises(SpikeFormatError, match="0/1"):
        encode_frames(np.full((1, 2, 4), 2, np.uint8))
