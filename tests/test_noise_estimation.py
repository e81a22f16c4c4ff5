"""Single-image noise-level-function estimation on simulated raw camera frames."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from napari_ntd._engine._noise_estimation import NoiseEstimate, estimate_noise
from napari_ntd._engine._vst import NoiseModel, as_noise_model

GAIN, OFFSET, READ = 2.0, 100.0, 6.0  # ADU/e-, ADU, ADU (3 e-)


def raw_frame(clean01, photons, *, gain=GAIN, offset=OFFSET, read=READ, seed=0, dtype=np.uint16):
    """``gain * Poisson(photons * clean01) + offset + N(0, read^2)``, rounded and clipped."""
    rng = np.random.default_rng(seed)
    z = gain * rng.poisson(photons * clean01) + offset + rng.normal(0.0, read, clean01.shape)
    info = np.iinfo(dtype)
    return np.clip(np.round(z), info.min, info.max).astype(dtype)


@pytest.fixture(scope="module")
def scene():
    """Camera in [0, 1] with ~7 % black (0-photon) pixels: the coat is the dark floor."""
    return np.clip((data.camera() - 15.0) / 225.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def smooth_scene(scene):
    """The scene out of focus (no pixel-scale texture)."""
    return ndimage.gaussian_filter(scene, 2.0)


@pytest.mark.parametrize("photons", [5, 20, 100, 1000])
def test_recovers_gain_offset_and_read_noise(scene, photons):
    # 1000 photons: the scene's texture is far above the noise (the texture mask)
    est = estimate_noise(raw_frame(scene, photons))
    assert est.kind == "poisson-gaussian"
    assert est.offset_source == "dark floor"
    assert est.gain == pytest.approx(GAIN, rel=0.1)
    assert est.read_noise == pytest.approx(READ, rel=0.1)
    assert est.offset == pytest.approx(OFFSET, abs=1.5)


def test_offset_without_black_background(scene):
    # 5-25 photons everywhere: the dark floor overestimates the offset (an
    # upper bound, as documented); a known offset gives the read noise back
    frame = raw_frame(5.0 / 20.0 + scene, 20)
    floor = estimate_noise(frame)
    assert floor.gain == pytest.approx(GAIN, rel=0.1)
    assert floor.offset > OFFSET + 0.5 * GAIN * 5.0
    assert floor.read_noise > 1.2 * READ
    given = estimate_noise(frame, offset=OFFSET)
    assert given.offset_source == "given" and given.offset == OFFSET
    assert given.read_noise == pytest.approx(READ, rel=0.1)


@pytest.mark.parametrize("sigma", [0.01, 0.05])
def test_gaussian_noise_on_a_float_image_is_gaussian(sigma):
    clean = data.camera() / 255.0
    noisy = clean + np.random.default_rng(1).normal(0.0, sigma, clean.shape)
    est = estimate_noise(noisy)
    assert est.kind == "gaussian"
    assert est.sigma == pytest.approx(sigma, rel=0.1)
    assert est.gain is None and est.quantization_variance == 0.0


def test_saturation_at_a_pile_up_does_not_bias_the_gain(smooth_scene):
    frame = raw_frame(smooth_scene, 100)
    full = np.median(frame)  # half of the pixels reach the full well
    clipped = np.minimum(frame, full)
    assert np.mean(clipped == full) > 0.45
    est = estimate_noise(clipped)
    assert est.kind == "poisson-gaussian"
    assert est.gain == pytest.approx(GAIN, rel=0.1)
    # no level set within 3 noise std of the clipping level
    assert np.all(est.levels + 3 * np.sqrt(est.variance(est.levels)) < full)


def test_saturation_at_the_dtype_maximum_does_not_bias_the_gain(smooth_scene):
    frame = raw_frame(smooth_scene, 300, gain=1.0, offset=10.0, read=2.0, dtype=np.uint8)
    assert np.mean(frame == 255) > 0.15
    est = estimate_noise(frame)
    assert est.kind == "poisson-gaussian"
    assert est.gain == pytest.approx(1.0, rel=0.1)


def test_rounding_variance_is_removed():
    # sigma 0.8 ADU: rounding adds 1/12 ADU^2 (sqrt(0.64 + 1/12) = 0.85, +6 %)
    smooth = ndimage.gaussian_filter(data.camera().astype(float), 2.0) * 0.8 + 20.0
    noisy = smooth + np.random.default_rng(2).normal(0.0, 0.8, smooth.shape)
    est = estimate_noise(np.round(noisy).astype(np.uint8))
    assert est.kind == "gaussian"
    assert est.quantization_variance == pytest.approx(1.0 / 12.0)
    assert est.sigma == pytest.approx(0.8, rel=0.03)


def test_constant_image_is_gaussian_with_sigma_zero():
    with pytest.warns(UserWarning, match="constant"):
        est = estimate_noise(np.full((64, 64), 7, dtype=np.uint16))
    assert est.kind == "gaussian" and est.sigma == 0.0
    assert str(est) == "Gaussian noise: sigma 0 ADU"


def test_noiseless_image_is_gaussian_with_sigma_zero():
    ramp = np.add.outer(np.linspace(0.0, 1.0, 64), np.linspace(0.0, 2.0, 64))
    with pytest.warns(UserWarning, match="no noise"):
        est = estimate_noise(ramp)
    assert est.kind == "gaussian" and est.sigma == 0.0


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((8, 100)), "too small"),
        (np.zeros((15, 200)), "too small"),
        (np.full((64, 64), 65535, np.uint16) - np.eye(64, dtype=np.uint16), "usable pixels"),
        (np.full((32, 32), np.nan), "NaN"),
    ],
)
def test_unusable_images_raise(image, match):
    with pytest.raises(ValueError, match=match):
        estimate_noise(image)


def test_non_real_images_raise():
    with pytest.raises(TypeError, match="real-valued"):
        estimate_noise(np.ones((32, 32), dtype=complex))


def test_channels_and_stacks_share_one_fit(scene):
    a, b = raw_frame(scene[:256, :256], 20, seed=3), raw_frame(scene[256:, 256:], 20, seed=4)
    stack = estimate_noise(np.stack([a, b]))
    channels = estimate_noise(np.stack([a, b], axis=-1), channel_axis=-1)
    assert channels == stack
    assert stack.gain == pytest.approx(GAIN, rel=0.1)


def test_str_and_model():
    est = NoiseEstimate(
        "poisson-gaussian",
        gain=2.012,
        offset=99.81,
        read_noise=6.1,
        quantization_variance=1 / 12,
        integer=True,
    )
    assert str(est) == (
        "Poisson-Gaussian noise: gain 2.01 ADU/e-, offset 99.81 ADU, read noise 6.1 ADU (3.0 e-)"
    )
    model = est.to_model()
    assert isinstance(model, NoiseModel) and model.kind == "poisson-gaussian"
    assert (model.gain, model.offset) == (2.012, 99.81)
    assert model.read_noise == pytest.approx(np.sqrt(6.1**2 + 1 / 12))
    assert as_noise_model(est) == model
    gauss = NoiseEstimate("gaussian", sigma=0.0491)
    assert str(gauss) == "Gaussian noise: sigma 0.0491"
    assert gauss.to_model() == NoiseModel("gaussian")
    assert re.fullmatch(r"NoiseEstimate\(kind='gaussian', sigma=0.0491, .*\)", repr(gauss))


def test_estimate_feeds_the_stabilising_transform(scene):
    # the fitted model stabilises the frame: GAT residual variance ~1 at every level
    from napari_ntd._engine._vst import gat_forward

    frame = raw_frame(scene, 20, seed=5)
    est = estimate_noise(frame)
    clean = GAIN * 20 * scene + OFFSET
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = as_noise_model(est)
    err = gat_forward(frame.astype(float), model) - gat_forward(clean, model)
    for band in (scene < 0.05, (scene > 0.4) & (scene < 0.6), scene > 0.9):
        assert np.var(err[band]) == pytest.approx(1.0, abs=0.1)
