"""Voxel bins and TFP on known streams."""
from __future__ import annotations

import numpy as np
import pytest

from vrt_spike.data.representations import channel_windows, represent, spike_counts


def _stream() -> np.ndarray:
    """12 frames of 2x2 pixels: pixel (0,0) fires every frame, (0,1) only in frames 0-2,
    (1,0) every other frame, (1,1) never."""
    s = np.zeros((12, 2, 2), np.uint8)
    s[:, 0, 0] = 1
    s[:3, 0, 1] = 1
    s[::2, 1, 0] = 1
    return s


def test_voxel_counts_on_known_stream():
    counts, lengths = spike_counts(_stream(), 4)  # bins of 3 frames
    np.testing.assert_array_equal(lengths, [3, 3, 3, 3])
    np.testing.assert_array_equal(counts[:, 0, 0], [3, 3, 3, 3])
    np.testing.assert_array_equal(counts[:, 0, 1], [3, 0, 0, 0])
    np.testing.assert_array_equal(counts[:, 1, 0], [2, 1, 2, 1])
    np.testing.assert_array_equal(counts[:, 1, 1], [0, 0, 0, 0])
    vox = represent(_stream(), 4)
    assert vox.dtype == np.float32 and vox.shape == (4, 2, 2)
    np.testing.assert_allclose(vox[:, 1, 0], [2 / 3, 1 / 3, 2 / 3, 1 / 3])
    assert vox.min() == 0.0 and vox.max() == 1.0


def test_voxel_bins_cover_exposure_when_not_divisible():
    starts, stops = channel_windows(10, 4)
    assert starts[0] == 0 and stops[-1] == 10
    np.testing.assert_array_equal(starts[1:], stops[:-1])  # contiguous, no frame counted twice
    counts, lengths = spike_counts(np.ones((10, 1, 8), np.uint8), 4)
    assert lengths.sum() == 10 and counts[:, 0, 0].sum() == 10
    np.testing.assert_array_equal(represent(np.ones((10, 1, 8), np.uint8), 4), 1.0)


def test_tfp_is_windowed_mean_firing():
    s = _stream()
    starts, stops = channel_windows(12, 4, "tfp", tfp_window=6)
    np.testing.assert_array_equal(stops - starts, 6)
    np.testing.assert_array_equal(starts, [0, 2, 5, 6])  # centred on 1.5, 4.5, 7.5, 10.5; clipped
    tfp = represent(s, 4, "tfp", tfp_window=6)
    np.testing.assert_allclose(tfp[:, 0, 1], [3 / 6, 1 / 6, 0, 0])
    np.testing.assert_allclose(tfp[:, 1, 0], 0.5)
    # default window 2N/K = 6
    np.testing.assert_array_equal(represent(s, 4, "tfp"), tfp)


def test_bad_arguments_name_the_values():
    with pytest.raises(ValueError, match="num_bins=8.*got 5"):
        spike_counts(np.zeros((5, 1, 8), np.uint8), 8)
    with pytest.raises(ValueError, match="'bogus'"):
        represent(np.zeros((5, 1, 8), np.uint8), 2, "bogus")
    with pytest.raises(ValueError, match=r"tfp_window must be in \[1, 5\].*got 9"):
        represent(np.zeros((5, 1, 8), np.uint8), 2, "tfp", tfp_window=9)
