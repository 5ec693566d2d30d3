"""Integrate-and-fire and blur synthesis."""
from __future__ import annotations

import numpy as np
import pytest

from vrt_spike.data.simulate import blur_and_sharp, downsample_area, integrate_and_fire, luminance


def test_firing_rate_is_proportional_to_brightness():
    levels = np.array([0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
    lum = np.broadcast_to(levels, (4000, 1, len(levels)))
    spikes, _ = integrate_and_fire(lum, threshold=2.0, gain=1.0, rng=np.random.default_rng(0))
    rate = spikes.mean(axis=0)[0]
    # Each step adds gain * L to the charge; one spike removes theta: rate = gain * L / theta.
    np.testing.assert_allclose(rate, levels / 2.0, atol=1 / 4000 + 1e-12)
    assert rate[0] == 0.0


def test_charge_is_conserved():
    rng = np.random.default_rng(3)
    lum = rng.random((50, 4, 4))
    charge0 = rng.uniform(0, 2.0, (4, 4))
    spikes, charge = integrate_and_fire(lum, threshold=2.0, charge=charge0)
    # initial + input = theta * spikes + final charge, and the final charge stays below theta.
    np.testing.assert_allclose(charge0 + lum.sum(0), 2.0 * spikes.sum(0) + charge)
    assert (charge >= 0).all() and (charge < 2.0).all()


def test_noise_changes_spikes_deterministically_from_the_seed():
    lum = np.full((200, 4, 4), 0.4)
    a, _ = integrate_and_fire(lum, noise_std=0.2, rng=np.random.default_rng(5))
    b, _ = integrate_and_fire(lum, noise_std=0.2, rng=np.random.default_rng(5))
    c, _ = integrate_and_fire(lum, noise_std=0.0, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert abs(a.mean() - 0.2) < 0.02  # zero-mean noise keeps the rate


def test_gain_above_threshold_is_rejected():
    with pytest.raises(ValueError, match="gain 3.*threshold 2"):
        integrate_and_fire(np.zeros((1, 1, 1)), threshold=2.0, gain=3.0)


def test_blur_is_mean_and_sharp_is_middle_subframe():
    sub = np.arange(5 * 2 * 2, dtype=np.float64).reshape(5, 2, 2)
    blur, sharp = blur_and_sharp(sub)
    np.testing.assert_array_equal(blur, sub.mean(0))
    np.testing.assert_array_equal(sharp, sub[2])


def test_luminance_and_area_downsampling():
    rgb = np.zeros((3, 2, 4))
    rgb[1] = 1.0
    np.testing.assert_allclose(luminance(rgb), 0.587)
    x = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_array_equal(downsample_area(x, 2), [[2.5, 4.5], [10.5, 12.5]])
    with pytest.raises(ValueError, match="3×4.*factor 2"):
        downsample_area(np.zeros((3, 4)), 2)
