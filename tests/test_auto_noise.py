"""noise_model='auto' (the default): the fitted model is used, in the input's units."""

import numpy as np
import pytest
from skimage import data, img_as_float
from skimage.metrics import peak_signal_noise_ratio as psnr

from napari_ntd import NoiseModel, denoise_ntd, estimate_noise

GAIN, OFFSET, READ = 2.0, 100.0, 6.0


def _raw_frame(photons=20, seed=0, n=128):
    clean = img_as_float(data.camera())[200 : 200 + n, 200 : 200 + n] * photons
    rng = np.random.default_rng(seed)
    raw = GAIN * rng.poisson(clean) + OFFSET + READ * rng.standard_normal(clean.shape)
    return np.clip(np.round(raw), 0, 65535).astype(np.uint16), GAIN * clean + OFFSET


def test_auto_on_raw_counts_uses_the_fitted_poisson_gaussian_model():
    raw, expected = _raw_frame()
    auto = denoise_ntd(raw, seed=0, preserve_range=True)
    true = NoiseModel("poisson-gaussian", gain=GAIN, offset=OFFSET, read_noise=READ)
    given = denoise_ntd(raw, seed=0, preserve_range=True, noise_model=true)
    gauss = denoise_ntd(raw, seed=0, preserve_range=True, noise_model="gaussian")
    rng_ = float(expected.max() - expected.min())
    p_auto, p_true, p_gauss = (psnr(expected, x, data_range=rng_) for x in (auto, given, gauss))
    assert p_auto > p_true - 0.3, (p_auto, p_true)
    assert p_auto > p_gauss + 0.3, (p_auto, p_gauss)
    # the same as passing the estimate back explicitly
    est = estimate_noise(raw)
    assert est.kind == "poisson-gaussian"
    np.testing.assert_array_equal(
        auto, denoise_ntd(raw, seed=0, preserve_range=True, noise_model=est)
    )


def test_auto_keeps_units_with_preserve_range_and_the_skimage_rule_without():
    raw, _ = _raw_frame()
    kept = denoise_ntd(raw, seed=0, preserve_range=True)
    scaled = denoise_ntd(raw, seed=0)
    assert 50 < np.median(kept) < 1000  # counts, like the input
    np.testing.assert_allclose(scaled, kept / 65535, rtol=0, atol=2e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_on_gaussian_data_equals_the_gaussian_model(dtype):
    clean = img_as_float(data.camera())[100:196, 100:196]
    noisy = (clean + 0.08 * np.random.default_rng(0).standard_normal(clean.shape)).astype(dtype)
    np.testing.assert_array_equal(
        denoise_ntd(noisy, seed=0), denoise_ntd(noisy, seed=0, noise_model="gaussian")
    )


def test_auto_with_a_given_sigma_is_gaussian():
    raw, _ = _raw_frame()
    np.testing.assert_array_equal(
        denoise_ntd(raw, seed=0, sigma=0.001),
        denoise_ntd(raw, seed=0, sigma=0.001, noise_model="gaussian"),
    )
