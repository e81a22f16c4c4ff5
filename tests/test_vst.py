"""Noise models: generalized Anscombe transform, exact unbiased inverse, estimation."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, img_as_float

from napari_ntd import denoise_ntd
from napari_ntd._engine._vst import (
    TABLE_MAX,
    NoiseModel,
    estimate_poisson_gaussian,
    expected_gat,
    gat_forward,
    gat_inverse,
)

MODELS = [
    NoiseModel("poisson", gain=1.0, offset=0.0, read_noise=0.0),
    NoiseModel("poisson-gaussian", gain=0.01, offset=0.05, read_noise=0.02),
    NoiseModel("poisson-gaussian", gain=3.0, offset=100.0, read_noise=6.0),
]


@pytest.mark.parametrize("model", MODELS)
def test_algebraic_round_trip_is_identity(model):
    # noiseless intensities above the offset: forward then algebraic inverse
    y = model.offset + model.gain * np.geomspace(1e-3, 1e4, 200)
    back = gat_inverse(gat_forward(y, model), model, unbiased=False)
    np.testing.assert_allclose(back, y, rtol=1e-12, atol=1e-12 * model.gain)


@pytest.mark.parametrize("s", [0.0, 0.5, 2.0])
def test_unbiased_inverse_inverts_the_expectation(s):
    # by definition: inverse(E[f | y]) = y (table part and asymptotic part)
    model = NoiseModel("poisson-gaussian", gain=1.0, offset=0.0, read_noise=s)
    y = np.concatenate([np.linspace(0.01, 5, 40), np.geomspace(5, TABLE_MAX * 0.99, 40)])
    np.testing.assert_allclose(gat_inverse(expected_gat(y, s), model), y, rtol=2e-4, atol=2e-3)
    # the asymptotic formula continues the table smoothly (error ~5e-5 photons there)
    d_edge = expected_gat(np.array([TABLE_MAX]), s)
    lo, hi = gat_inverse(d_edge - 1e-9, model), gat_inverse(d_edge + 1e-9, model)
    assert abs(hi - lo)[0] < 1e-3


def test_unbiased_inverse_on_noiseless_values():
    # theory: for large y, E[f | y] ~ 2 sqrt(y + 3/8) - 1 / (4 sqrt(y)), so the unbiased
    # inverse of the noiseless value f(y) is y + 1/4 + O(1 / y)
    model = MODELS[0]
    y = np.array([50.0, 200.0, 1000.0, 5000.0])
    back = gat_inverse(gat_forward(y, model), model)
    np.testing.assert_allclose(back - y, 0.25, atol=2.0 / y.min())


@pytest.mark.parametrize(("y", "s"), [(0.5, 0.0), (2.0, 0.0), (10.0, 0.5), (100.0, 1.0)])
def test_unbiased_inverse_removes_bias_on_noisy_data(y, s):
    rng = np.random.default_rng(int(10 * y))
    n = 200_000
    z = rng.poisson(y, n) + s * rng.standard_normal(n)
    model = NoiseModel("poisson-gaussian", gain=1.0, offset=0.0, read_noise=s)
    f = gat_forward(z, model)
    d = f.mean()
    # standard error of the mean, mapped through dy/dD ~ D / 2 (+ slack for small y)
    se = f.std() / np.sqrt(n) * max(d / 2, 1.0)
    est = gat_inverse(np.array([d]), model)[0]
    assert abs(est - y) < 5 * se
    algebraic = gat_inverse(np.array([d]), model, unbiased=False)[0]
    if y <= 2:  # the algebraic inverse is visibly biased at low counts
        assert abs(algebraic - y) > 10 * se


def _smooth_scene(shape=(128, 128)):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / shape[0]
    return 0.1 + 0.8 * (0.5 + 0.5 * np.sin(3 * xx) * np.cos(2 * yy)) * xx


@pytest.mark.parametrize(("gain", "read"), [(0.01, 0.0), (0.005, 0.02), (0.02, 0.01)])
def test_estimate_poisson_gaussian(gain, read):
    rng = np.random.default_rng(3)
    clean = _smooth_scene()
    z = gain * rng.poisson(clean / gain) + read * rng.standard_normal(clean.shape)
    g, b = estimate_poisson_gaussian(z)
    assert g == pytest.approx(gain, rel=0.15)
    # the intercept is the hard part: within ~10 % of the variance at the mean level
    assert b == pytest.approx(read**2, abs=0.3 * read**2 + 0.1 * gain * clean.mean())
    if read == 0:
        g0, b0 = estimate_poisson_gaussian(z, poisson_only=True)
        assert g0 == pytest.approx(gain, rel=0.15) and b0 == 0


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"kind": "gamma"}, ValueError, "unknown noise_model"),
        ({"kind": "poisson", "gain": -1.0}, ValueError, "gain"),
        ({"kind": "poisson", "read_noise": 1.0}, ValueError, "read noise"),
        ({"kind": "gaussian", "gain": 1.0}, ValueError, "sigma"),
        ({"kind": "poisson-gaussian", "read_noise": -1.0}, ValueError, "read_noise"),
        ({"kind": "poisson", "gain": "1"}, TypeError, "gain"),
    ],
)
def test_noise_model_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        NoiseModel(**kwargs)


def test_sigma_with_poisson_is_an_error():
    with pytest.raises(ValueError, match="sigma applies"):
        denoise_ntd(np.ones((32, 32)), noise_model="poisson", sigma=0.1)
    with pytest.raises(TypeError, match="noise_model"):
        denoise_ntd(np.ones((32, 32)), noise_model=3)


FAST = {"patch_size": 5, "n_columns": 64, "n_iter": 3, "seed": 0}


@pytest.fixture(scope="module")
def photons():
    clean = img_as_float(data.camera())[100:164, 200:264] * 0.9 + 0.05
    peak = 20.0
    counts = np.random.default_rng(7).poisson(clean * peak)
    return clean * peak, counts


def test_poisson_denoising_is_unbiased_and_better(photons):
    clean, counts = photons
    model = NoiseModel("poisson", gain=1.0)
    out = denoise_ntd(counts.astype(np.float64), noise_model=model, **{**FAST, "n_iter": "auto"})
    mse = np.mean((out - clean) ** 2)
    assert mse < 0.4 * np.mean((counts - clean) ** 2)
    # no gross bias (the algebraic inverse would lose ~1/8 photon per pixel and more)
    assert abs(out.mean() - clean.mean()) < 0.1 * clean.mean()


def test_parameters_are_in_raw_units(photons):
    # uint16 input is converted to [0, 1]; gain/offset in ADU must give the same result
    _, counts = photons
    adu = (100 + 40 * counts).astype(np.uint16)
    model = NoiseModel("poisson", gain=40.0, offset=100.0)
    scaled = denoise_ntd(adu, noise_model=model, **FAST)
    raw = denoise_ntd(adu, noise_model=model, preserve_range=True, **FAST)
    np.testing.assert_allclose(scaled * 65535, raw, rtol=1e-4, atol=1e-3)


def test_estimated_poisson_gaussian_runs(photons):
    clean, counts = photons
    z = counts + np.random.default_rng(1).normal(0, 1.0, counts.shape)
    out = denoise_ntd(z, noise_model="poisson-gaussian", **{**FAST, "n_iter": "auto"})
    assert np.mean((out - clean) ** 2) < 0.6 * np.mean((z - clean) ** 2)
