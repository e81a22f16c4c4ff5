"""denoise_ntd: denoising quality, skimage conventions, the algorithm's pieces."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as psnr

from napari_ntd import denoise_ntd, iter_denoise_ntd
from napari_ntd._api import EXACT_MAX_PIXELS
from napari_ntd._engine._image import robust_center
from napari_ntd._ntk._kernel import exact_kernel
from napari_ntd._ntk._nystrom import exact_basis, nystrom_basis
from napari_ntd._ntk._plane import iter_fit_plane
from napari_ntd._ntk._twicing import apply, error_curve, project
from napari_ntd._util._config import NTDConfig
from napari_ntd._util._progress import run_to_end

FAST = dict(n_columns=200, seed=0)


def _fast(method):
    """FAST without the keywords ``method`` does not take (exact: no columns)."""
    return {k: v for k, v in FAST.items() if k != "n_columns" or method != "exact"}


# --- quality -----------------------------------------------------------------


@pytest.mark.parametrize(("method", "n"), [("nystrom", 48), ("exact", 32)])
def test_improves_psnr(noisy_camera, method, n):
    clean, noisy, sigma = noisy_camera
    clean, noisy = clean[:n, :n], noisy[:n, :n]
    out = denoise_ntd(noisy, sigma=sigma, method=method, **_fast(method))
    assert psnr(clean, out, data_range=1) > psnr(clean, noisy, data_range=1) + 3.0


def test_estimated_sigma_close_to_given(noisy_camera):
    clean, noisy, sigma = noisy_camera
    auto = denoise_ntd(noisy, **FAST)
    given = denoise_ntd(noisy, sigma=sigma, **FAST)
    assert psnr(clean, auto, data_range=1) > psnr(clean, given, data_range=1) - 0.5


def test_multichannel_improves_and_shares_kernel(astronaut_crop, rng):
    sigma = 0.1
    noisy = astronaut_crop + sigma * rng.standard_normal(astronaut_crop.shape)
    out = denoise_ntd(noisy, sigma=sigma, channel_axis=-1, **FAST)
    assert out.shape == noisy.shape
    assert psnr(astronaut_crop, out, data_range=1) > psnr(astronaut_crop, noisy, data_range=1) + 3


# --- skimage conventions ------------------------------------------------------


@pytest.mark.parametrize("channel_axis", [0, 1, 2, -1])
def test_channel_axis_equivalent(astronaut_crop, rng, channel_axis):
    noisy = astronaut_crop + 0.1 * rng.standard_normal(astronaut_crop.shape)
    ref = denoise_ntd(noisy, sigma=0.1, channel_axis=-1, n_iter=20, **FAST)
    moved = np.moveaxis(noisy, -1, channel_axis)
    out = denoise_ntd(moved, sigma=0.1, channel_axis=channel_axis, n_iter=20, **FAST)
    assert out.shape == moved.shape
    if channel_axis in (2, -1):
        np.testing.assert_array_equal(out, np.moveaxis(ref, -1, channel_axis))
    # channel_axis=1 makes a (40, 3, 40) image: the 40 x 40 plane is then the
    # (H, W) from axes 0 and 2; same data, same result
    np.testing.assert_allclose(np.moveaxis(out, channel_axis, -1), ref, atol=1e-12)


@pytest.mark.parametrize(
    ("dtype", "out_dtype"),
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.float16, np.float32),
        (np.uint8, np.float64),
        (np.uint16, np.float64),
        (np.int16, np.float64),
    ],
)
def test_dtype_rules(camera_crop, rng, dtype, out_dtype):
    noisy = np.clip(camera_crop + 0.1 * rng.standard_normal(camera_crop.shape), 0, 1)
    if np.issubdtype(dtype, np.integer):
        img = (noisy * np.iinfo(dtype).max).astype(dtype)
    else:
        img = noisy.astype(dtype)
    out = denoise_ntd(img, n_iter=10, **FAST)
    assert out.dtype == out_dtype
    assert out.shape == img.shape
    # ints are scaled to [0, 1] (img_as_float), not left in their range
    assert 0.5 * out.mean() < noisy.mean() < 2 * out.mean() or dtype == np.int16


def test_preserve_range(camera_crop, rng):
    img = np.clip(camera_crop + 0.05 * rng.standard_normal(camera_crop.shape), 0, 1) * 4000
    img = img.astype(np.uint16)
    out = denoise_ntd(img, preserve_range=True, n_iter=30, **FAST)
    assert out.dtype == np.float64
    assert abs(out.mean() - img.mean()) < 0.05 * img.mean()
    scaled = denoise_ntd(img, n_iter=30, **FAST)
    np.testing.assert_allclose(out / 65535, scaled, atol=1e-4)


def test_float32_close_to_float64(noisy_camera):
    _, noisy, sigma = noisy_camera
    out64 = denoise_ntd(noisy, sigma=sigma, n_iter=50, **FAST)
    out32 = denoise_ntd(noisy.astype(np.float32), sigma=sigma, n_iter=50, **FAST)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, atol=2e-3)


def test_sigma_scales_with_preserve_range(noisy_camera):
    """sigma is in the units of the (converted) image: 255x image, 255x sigma."""
    _, noisy, sigma = noisy_camera
    a = denoise_ntd(noisy, sigma=sigma, **FAST)
    b = denoise_ntd(noisy * 255, sigma=sigma * 255, **FAST)
    # float32 pilot (non-local Bayes): equal to float32 rounding through the solves
    np.testing.assert_allclose(b / 255, a, atol=5e-5)


def test_input_not_modified_and_readonly_noncontiguous_bigendian(noisy_camera):
    _, noisy, sigma = noisy_camera
    img = np.asfortranarray(noisy).astype(">f8")
    img.setflags(write=False)
    before = img.copy()
    out = denoise_ntd(img[:, ::-1], sigma=sigma, n_iter=5, **FAST)
    np.testing.assert_array_equal(img, before)
    assert out.dtype == np.float64 and out.dtype.isnative


def test_constant_image_stays_constant():
    img = np.full((32, 32), 0.3, dtype=np.float32)
    out = denoise_ntd(img, seed=0)
    np.testing.assert_array_equal(out, img)
    assert out is not img


def test_list_input(camera_crop):
    out = denoise_ntd(camera_crop.tolist(), sigma=0.05, n_iter=5, **FAST)
    assert out.shape == camera_crop.shape


# --- determinism and progress -------------------------------------------------


def test_same_seed_identical_output(noisy_camera):
    _, noisy, sigma = noisy_camera
    a = denoise_ntd(noisy, sigma=sigma, n_columns=200, seed=3)
    b = denoise_ntd(noisy, sigma=sigma, n_columns=200, seed=3)
    c = denoise_ntd(noisy, sigma=sigma, n_columns=200, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_progress_callback_and_generator(noisy_camera):
    _, noisy, sigma = noisy_camera
    calls = []
    out = denoise_ntd(noisy, sigma=sigma, progress=lambda d, t: calls.append((d, t)), **FAST)
    assert len(calls) >= 3
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and calls[-1][0] == calls[-1][1]
    steps = []
    result = run_to_end(iter_denoise_ntd(noisy, sigma=sigma, **FAST), steps.append)
    assert steps == calls
    np.testing.assert_array_equal(result, out)


def test_progress_true_uses_tqdm_and_silent_otherwise(noisy_camera, capsys):
    _, noisy, sigma = noisy_camera
    denoise_ntd(noisy, sigma=sigma, n_iter=5, **FAST)
    assert capsys.readouterr() == ("", "")
    denoise_ntd(noisy, sigma=sigma, n_iter=5, progress=True, **FAST)
    assert "denoise_ntd" in capsys.readouterr().err


def test_generator_can_be_stopped(noisy_camera):
    _, noisy, sigma = noisy_camera
    gen = iter_denoise_ntd(noisy, sigma=sigma, **FAST)
    next(gen)
    gen.close()  # no exception, nothing returned


def test_import_does_not_import_napari_or_qt():
    code = (
        "import sys, napari_ntd; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'magicgui')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# --- the algorithm's pieces against references --------------------------------


def _centred(noisy_camera, n=20):
    _, noisy, _ = noisy_camera
    return torch.from_numpy(noisy[:n, :n] - 0.5)[None]


def test_closed_form_twicing_equals_iteration(noisy_camera):
    """z^t from the eigenbasis == t explicit steps z <- z + W (y - z)."""
    y = _centred(noisy_camera)
    k = exact_kernel(y, 5)
    w = k / torch.linalg.eigvalsh(k).max()
    basis = run_to_end(exact_basis(y, patch_size=5))
    yf = y.reshape(1, -1)
    proj = project(basis, yf)
    z = torch.zeros_like(yf[0])
    for t in range(1, 13):
        z = z + w @ (yf[0] - z)
        if t in (1, 4, 12):
            closed = apply(basis, proj, np.array([t]))[0]
            torch.testing.assert_close(closed, z, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(
    ("dtype", "atol"),
    [
        (torch.float64, 1e-8),
        # the float32 runtime path (float32 kernel blocks through the compiled
        # kernel, float64 eigendecompositions, float32 basis): measured max
        # error 1.0e-6, 2.0e-6, 5.4e-6 at t = 1, 5, 20 (values ~0.5, whose
        # float32 spacing is 6e-8); the bound, 10x that, is ~800 such steps.
        # The basis' Gram matrix: 1.1e-7 from the identity (bound 1e-5).
        (torch.float32, 5e-5),
    ],
)
def test_nystrom_twicing_equals_iterating_the_nystrom_matrix(noisy_camera, dtype, atol):
    """Closed-form twicing in the returned basis == eq. (5) iterated with the
    Nystrom matrix W = C A^-1 C^T (appendix G), built here independently from
    exact float64 kernel columns of the same (dtype-rounded) image and scaled
    so that its largest eigenvalue is 1."""
    y = _centred(noisy_camera).to(dtype)
    y64 = y.double()
    d = y.numel()
    cols = torch.randperm(d, generator=torch.Generator().manual_seed(2))[:60]
    k = exact_kernel(y64, 5)
    c = k[:, cols]
    w = c @ torch.linalg.solve(k[cols][:, cols], c.T)
    w = w / torch.linalg.eigvalsh(w).max()
    basis = run_to_end(nystrom_basis(y, cols, patch_size=5, rank=None))
    assert basis.vectors.dtype == dtype and basis.vectors.shape[1] == 60
    gram = basis.vectors.double().T @ basis.vectors.double()
    gram_atol = 1e-8 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(gram, torch.eye(60, dtype=gram.dtype), atol=gram_atol, rtol=0)
    yf = y.reshape(1, -1)
    proj = project(basis, yf)
    z = torch.zeros_like(y64.reshape(-1))
    for t in range(1, 21):
        z = z + w @ (y64.reshape(-1) - z)
        if t in (1, 5, 20):
            closed = apply(basis, proj, np.array([t]))[0]
            assert closed.dtype == dtype
            torch.testing.assert_close(closed.double(), z, rtol=0, atol=atol)


def test_error_curve_matches_direct_computation(noisy_camera):
    clean, _, _ = noisy_camera
    y = _centred(noisy_camera)
    x = torch.from_numpy(clean[:20, :20] - 0.5).reshape(1, -1)
    cols = torch.randperm(400, generator=torch.Generator().manual_seed(0))[:150]
    basis = run_to_end(nystrom_basis(y, cols, patch_size=5, rank=None))
    proj = project(basis, y.reshape(1, -1))
    ts = np.array([1, 7, 50])
    curve = error_curve(basis, proj, project(basis, x).coef, (x.double() ** 2).sum(1), ts)
    for i, t in enumerate(ts):
        direct = ((apply(basis, proj, np.array([t]))[0] - x[0]) ** 2).sum()
        assert abs(curve[0, i].item() - direct.item()) < 1e-8 * max(1.0, direct.item())


def test_nystrom_converges_to_exact(noisy_camera):
    y = _centred(noisy_camera, n=24)
    d = y.numel()
    yf = y.reshape(1, -1)
    ex = run_to_end(exact_basis(y, patch_size=5))
    z_exact = apply(ex, project(ex, yf), np.array([30]))[0]
    perm = torch.randperm(d, generator=torch.Generator().manual_seed(1))
    errors = []
    for m in (d // 8, d // 2, d):
        basis = run_to_end(nystrom_basis(y, perm[:m], patch_size=5, rank=None))
        z = apply(basis, project(basis, yf), np.array([30]))[0]
        errors.append(float((z - z_exact).norm() / z_exact.norm()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-6


def test_nystrom_memory_is_rank_bounded(noisy_camera):
    y = _centred(noisy_camera, n=40)
    cols = torch.randperm(1600, generator=torch.Generator().manual_seed(0))[:300]
    basis = run_to_end(nystrom_basis(y, cols, patch_size=5, rank=32, block_pixels=128))
    assert basis.vectors.shape == (1600, 32)
    assert basis.values[0] == 1 and (basis.values[1:] <= basis.values[:-1]).all()


def _sure_and_oracle(clean, noisy, sigma, method, seed=0):
    """PSNR at the MC-SURE choice and at the oracle-best t, from one fit."""
    center = robust_center(noisy[..., None])
    y = torch.from_numpy(noisy - center)[None]
    x = torch.from_numpy(clean - center).reshape(1, -1)
    cfg = NTDConfig(method=method, n_columns=200, seed=seed)
    fit = run_to_end(iter_fit_plane(y, sigma, cfg, torch.Generator().manual_seed(seed)))
    ref = project(fit.basis, x).coef
    mse = error_curve(fit.basis, fit.proj, ref, (x.double() ** 2).sum(1), fit.ts)[0]
    mse = mse / x.numel()
    chosen = int(np.searchsorted(fit.ts, fit.t[0]))
    return -10 * np.log10(mse[chosen].item()), -10 * np.log10(mse.min().item()), fit, mse


@pytest.mark.parametrize("method", ["exact", "nystrom"])
def test_mc_sure_close_to_oracle(method, rng):
    """The t picked by MC-SURE loses little against the oracle-best t, and
    the SURE curve estimates the true MSE around its minimum."""
    from skimage import data, img_as_float

    losses = []
    n = 48 if method == "nystrom" else 32  # the exact eigendecomposition is O(n^6)
    for crop in [(100, 200), (300, 300)]:
        clean = img_as_float(data.camera())[crop[0] : crop[0] + n, crop[1] : crop[1] + n]
        sigma = 25 / 255
        noisy = clean + sigma * rng.standard_normal(clean.shape)
        at_sure, best, fit, mse = _sure_and_oracle(clean, noisy, sigma, method)
        losses.append(best - at_sure)
        i = int(mse.argmin())
        assert abs(fit.sure[0, i].item() - mse[i].item()) < 0.25 * mse[i].item()
        # the public function returns the SURE choice
        out = denoise_ntd(noisy, sigma=sigma, method=method, **_fast(method))
        assert abs(psnr(clean, out, data_range=1) - at_sure) < 1e-6
    assert np.mean(losses) < 0.3, losses


def test_exact_size_limit_and_config_columns():
    img = np.zeros((65, 64))
    img[::2] = 1
    assert img.size > EXACT_MAX_PIXELS
    with pytest.raises(ValueError, match=r"method='exact'.*limited"):
        denoise_ntd(img, method="exact")
    cfg = NTDConfig()
    assert cfg.columns(10_000) == 200
    assert cfg.columns(100) == 64  # floor
    assert cfg.columns(10**7) == 6000  # cap
    assert NTDConfig(n_columns=1.0).columns(50) == 50


# --- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "kwargs", "exc", "match"),
    [
        (np.full((20, 20), np.nan), {}, ValueError, "NaN"),
        (np.pad(np.full((1, 1), np.inf), 10), {}, ValueError, "infinite"),
        (np.zeros((0, 20)), {}, ValueError, "empty"),
        (np.zeros((20, 20, 3)), {}, NotImplementedError, "channel_axis"),
        (np.zeros(30), {}, NotImplementedError, "2D"),
        (np.zeros((20, 20)), {"channel_axis": -1}, NotImplementedError, "2D"),
        (np.zeros((20, 20, 3)), {"channel_axis": 3}, ValueError, "channel_axis"),
        (np.zeros((20, 20), complex), {}, TypeError, "complex"),
        (np.array([["a", "b"]]), {}, TypeError, "numeric"),
        (np.empty((20, 20), object), {}, TypeError, "numeric"),
        (np.zeros((8, 30)), {}, ValueError, "smaller than the patch"),
        (np.zeros((20, 20)), {"method": "bm3d"}, ValueError, "unknown method"),
        (np.zeros((20, 20)), {"sigma": -0.1}, ValueError, "sigma"),
        (np.zeros((20, 20)), {"sigma": float("nan")}, ValueError, "sigma"),
        (np.zeros((20, 20)), {"n_iter": -1}, ValueError, "n_iter"),
        (np.zeros((20, 20)), {"n_iter": 0, "method": "nystrom"}, ValueError, "n_iter"),
        (np.zeros((20, 20)), {"n_iter": "fast"}, ValueError, "n_iter"),
        (np.zeros((20, 20)), {"patch_size": 4}, ValueError, "patch_size"),
        (np.zeros((20, 20)), {"n_columns": 1.5}, ValueError, "n_columns"),
        (np.zeros((20, 20)), {"n_columns": 0}, ValueError, "n_columns"),
        (np.zeros((20, 20)), {"rank": 0}, ValueError, "rank"),
        (np.zeros((20, 20)), {"progress": 3}, TypeError, "progress"),
    ],
)
def test_bad_input(image, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        denoise_ntd(image, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        denoise_ntd(np.random.default_rng(0).random((20, 20)), device="cuda")
