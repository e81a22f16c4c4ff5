"""The guided method's pilot: sliding-DCT shrinkage against a block-by-block reference."""

import numpy as np
import pytest
import scipy.fft
import torch
from skimage import data, img_as_float
from skimage.metrics import peak_signal_noise_ratio as psnr

from napari_ntd._ntk import _pilot
from napari_ntd._ntk._pilot import dct_matrix, dct_shrink, nlm, pilot


def _shrink_block(block, guide_block, sigma, threshold):
    """One block, as the pilot filters it: ``(filtered block, aggregation weight)``."""
    c = scipy.fft.dctn(block, norm="ortho")
    if guide_block is None:
        keep = np.abs(c) > threshold * sigma
        keep.flat[0] = True
        c, w = c * keep, 1.0 / keep.sum()
    else:
        g2 = scipy.fft.dctn(guide_block, norm="ortho") ** 2
        s = g2 / (g2 + sigma**2)
        s.flat[0] = 1.0
        c, w = c * s, 1.0 / max((s**2).sum(), 1e-12)
    return w * scipy.fft.idctn(c, norm="ortho"), w


def _reference(x, sigma, guide=None, n=8, threshold=2.7):
    """Every n x n block of the reflect-padded plane, one at a time (scipy DCT)."""
    pad = n - 1
    xp = np.pad(x, pad, mode="reflect")
    gp = None if guide is None else np.pad(guide, pad, mode="reflect")
    num, den = np.zeros_like(xp), np.zeros_like(xp)
    for i in range(xp.shape[0] - n + 1):
        for j in range(xp.shape[1] - n + 1):
            block = (slice(i, i + n), slice(j, j + n))
            g = None if gp is None else gp[block]
            out, w = _shrink_block(xp[block], g, sigma, threshold)
            num[block] += out
            den[block] += w
    return (num / den)[pad:-pad, pad:-pad]


def _reference_nd(x, sigma, guide=None, n=4, threshold=2.7):
    """Any dimension: every n^k block of the reflect-padded array, one at a time."""
    import itertools

    pad = n - 1
    xp = np.pad(x, pad, mode="reflect")
    gp = None if guide is None else np.pad(guide, pad, mode="reflect")
    num, den = np.zeros_like(xp), np.zeros_like(xp)
    for corner in itertools.product(*(range(m - n + 1) for m in xp.shape)):
        block = tuple(slice(c, c + n) for c in corner)
        out, w = _shrink_block(xp[block], None if gp is None else gp[block], sigma, threshold)
        num[block] += out
        den[block] += w
    return (num / den)[tuple(slice(pad, m - pad) for m in xp.shape)]


@pytest.mark.parametrize("guided", [False, True])
def test_dct_shrink_volumes_match_block_by_block_reference(guided):
    y = np.random.default_rng(1).random((6, 7, 5))
    guide = _reference_nd(y, 0.1) if guided else None
    g = None if guide is None else torch.from_numpy(guide)[None, None]
    out = dct_shrink(torch.from_numpy(y)[None, None], 0.1, guide=g, size=4)[0, 0].numpy()
    np.testing.assert_allclose(out, _reference_nd(y, 0.1, guide), atol=1e-10)
    assert np.abs(out - y).max() > 0.05


def test_volume_pilot_uses_the_third_dimension():
    """A volume's pilot beats the same pilot slice by slice (blobs, sigma 0.15)."""
    from scipy import ndimage
    from skimage.data import binary_blobs

    clean = binary_blobs(length=32, n_dim=3, volume_fraction=0.3, blob_size_fraction=0.2, rng=1)
    clean = ndimage.gaussian_filter(clean.astype(np.float64), 1.5)[:12]
    noisy = clean + 0.15 * np.random.default_rng(0).standard_normal(clean.shape)
    vol = pilot(noisy[..., None], 0.15)[..., 0]
    slices = np.stack([pilot(s[..., None], 0.15)[..., 0] for s in noisy])
    p_vol, p_sl = psnr(clean, vol, data_range=1), psnr(clean, slices, data_range=1)
    assert p_vol > p_sl + 1.0, (p_vol, p_sl)


def _noisy(shape, sigma=0.1, seed=0):
    clean = img_as_float(data.camera())[100 : 100 + shape[0], 150 : 150 + shape[1]]
    return clean, clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)


def test_dct_matrix_is_scipy_orthonormal_dct():
    d = dct_matrix(8).numpy()
    np.testing.assert_allclose(d, scipy.fft.dct(np.eye(8), norm="ortho", axis=0), atol=1e-12)
    np.testing.assert_allclose(d @ d.T, np.eye(8), atol=1e-12)


@pytest.mark.parametrize("shape", [(21, 17), (9, 30)])
@pytest.mark.parametrize("guided", [False, True])
def test_dct_shrink_matches_block_by_block_reference(shape, guided):
    _, y = _noisy(shape)
    sigma = 0.1
    guide = _reference(y, sigma) if guided else None
    t = torch.from_numpy(y)[None, None]
    g = None if guide is None else torch.from_numpy(guide)[None, None]
    out = dct_shrink(t, sigma, guide=g)[0, 0].numpy()
    ref = _reference(y, sigma, guide)
    np.testing.assert_allclose(out, ref, atol=1e-10)
    assert np.abs(out - y).max() > 0.05  # it did filter (the test could fail)


def test_dct_shrink_bands_do_not_change_the_result(monkeypatch):
    _, y = _noisy((40, 33))
    t = torch.from_numpy(np.stack([y, y[::-1].copy()]))[:, None]
    whole = dct_shrink(t, 0.1)
    monkeypatch.setattr(_pilot, "_BAND_ELEMENTS", 1)  # one block row per band
    np.testing.assert_allclose(dct_shrink(t, 0.1).numpy(), whole.numpy(), atol=1e-12)


def test_dct_shrink_without_shrinkage_is_the_identity():
    _, y = _noisy((19, 23))
    t = torch.from_numpy(y)[None, None]
    np.testing.assert_allclose(dct_shrink(t, 0.1, threshold=0.0)[0, 0].numpy(), y, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dct_shrink_follows_dtype_and_small_planes(dtype):
    t = torch.rand(2, 1, 5, 3, dtype=dtype)  # smaller than a block: blocks shrink to fit
    out = dct_shrink(t, 0.05)
    assert out.dtype == dtype and out.shape == t.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_pilot_shapes_dtypes_and_constants(channels):
    img = np.full((24, 20, channels), 0.25, np.float32)
    out = pilot(img, 0.1)
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_allclose(out, img, atol=1e-6)  # a constant image is its own pilot
    np.testing.assert_array_equal(pilot(img, 0.0), img)


def test_pilot_beats_its_non_local_means_part():
    """The combination is the point: it must beat non-local means alone."""
    clean, noisy = _noisy((96, 96), sigma=25 / 255)
    y = noisy[..., None]
    p_pilot = psnr(clean, pilot(y, 25 / 255)[..., 0], data_range=1)
    p_nlm = psnr(clean, nlm(y, 25 / 255)[..., 0], data_range=1)
    assert p_pilot > p_nlm + 0.3, (p_pilot, p_nlm)


def test_pilot_colour_is_filtered_in_an_orthonormal_opponent_space():
    opp = _pilot._OPPONENT
    np.testing.assert_allclose(opp @ opp.T, np.eye(3), atol=1e-12)
    # gray RGB (three equal channels) stays gray
    _, noisy = _noisy((32, 32))
    rgb = np.repeat(noisy[..., None], 3, axis=-1)
    out = pilot(rgb, 0.1)
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-6)


def test_pilot_with_a_tiny_sigma_is_finite():
    """sigma**2 may underflow (found by hypothesis on a step edge): no 0 / 0."""
    img = np.zeros((11, 11, 1), np.float32)
    img[:, 5:] = 1.0
    out = pilot(img, 1e-30)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, img, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_pilot_follows_scale_and_offset(channels):
    """Units do not matter: pilot(a y + c, a sigma) = a pilot(y, sigma) + c.

    The offset part holds because both DCT passes keep the block means.
    """
    _, noisy = _noisy((40, 36))
    img = np.stack([noisy, noisy[::-1], noisy[:, ::-1]][:channels], axis=-1)
    base = pilot(img, 0.1)
    moved = pilot(250.0 * img + 1000.0, 25.0)
    np.testing.assert_allclose(moved, 250.0 * base + 1000.0, rtol=0, atol=1e-6 * 1250)
    assert np.abs(base - img).max() > 0.05  # it filtered


def _reference_window(x, sigma, guide=None, n=4, threshold=2.7):
    """Space-time blocks: all T frames by every n x n block of the reflect-padded frames."""
    pad = n - 1
    spatial = ((0, 0), (pad, pad), (pad, pad))
    xp = np.pad(x, spatial, mode="reflect")
    gp = None if guide is None else np.pad(guide, spatial, mode="reflect")
    num, den = np.zeros_like(xp), np.zeros_like(xp)
    for i in range(xp.shape[1] - n + 1):
        for j in range(xp.shape[2] - n + 1):
            block = (slice(None), slice(i, i + n), slice(j, j + n))
            g = None if gp is None else gp[block]
            out, w = _shrink_block(xp[block], g, sigma, threshold)
            num[block] += out
            den[block] += w
    return (num / den)[:, pad:-pad, pad:-pad]


@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("guided", [False, True])
def test_dct_window_matches_block_by_block_reference(frames, guided, monkeypatch):
    """Time-lapse pilot: T x n x n blocks (:func:`dct_window`), bands or not."""
    y = np.random.default_rng(2).random((frames, 9, 11))
    guide = _reference_window(y, 0.1) if guided else None
    g = None if guide is None else torch.from_numpy(guide)[None]
    out = _pilot.dct_window(torch.from_numpy(y)[None], 0.1, guide=g, size=4)[0].numpy()
    np.testing.assert_allclose(out, _reference_window(y, 0.1, guide), atol=1e-10)
    assert np.abs(out - y).max() > 0.05
    monkeypatch.setattr(_pilot, "_BAND_ELEMENTS", 1)  # one block row per band
    banded = _pilot.dct_window(torch.from_numpy(y)[None], 0.1, guide=g, size=4)[0].numpy()
    np.testing.assert_allclose(banded, out, atol=1e-12)
    if frames == 1:  # one frame: the 2D sliding DCT
        flat = dct_shrink(torch.from_numpy(y)[None], 0.1, guide=g, size=4)[0].numpy()
        np.testing.assert_allclose(out, flat, atol=1e-12)


@pytest.mark.parametrize("channels", [1, 3])
def test_window_guided_matches_block_by_block_reference(channels):
    """The refining Wiener of time-lapses: each channel group's space-time
    blocks (``size`` for gray / luminance, ``CHROMA_DCT_SIZE`` for the colour
    differences, in the orthonormal opponent space)."""
    rng = np.random.default_rng(5)
    movie = rng.random((3, 14, 16, channels))
    guide = movie + 0.2 * rng.standard_normal(movie.shape)
    out = _pilot.window_guided(movie, guide, 0.1, size=4)
    opp = _pilot._OPPONENT if channels == 3 else np.eye(1)
    y, g = movie @ opp.T, guide @ opp.T
    sizes = [4, _pilot.CHROMA_DCT_SIZE, _pilot.CHROMA_DCT_SIZE][:channels]
    ref = np.stack(
        [_reference_window(y[..., k], 0.1, g[..., k], n=n) for k, n in enumerate(sizes)],
        -1,
    )
    np.testing.assert_allclose(out, ref @ opp, atol=1e-10)
    assert np.abs(out - movie).max() > 0.05


def test_window_wiener_block_size_matches_reference():
    """The first guide of time-lapses with ``size x size`` blocks: hard
    thresholding, then the Wiener guided by its mean with the non-local means."""
    rng = np.random.default_rng(6)
    movie = rng.random((3, 10, 12, 1))
    nl = movie + 0.1 * rng.standard_normal(movie.shape)
    out = _pilot.window_wiener(movie, nl, 0.1, size=4)
    y = movie[..., 0]
    hard = _reference_window(y, 0.1, n=4)
    ref = _reference_window(y, 0.1, (hard + nl[..., 0]) / 2, n=4)
    np.testing.assert_allclose(out[..., 0], ref, atol=1e-10)


def test_pilots_like_gives_crops_the_images_parameters(monkeypatch):
    """A crop filtered ``like`` its image uses the image's non-local Bayes parameters.

    The guided method's SURE reruns the pilot on perturbed crops; their noise
    level on a 0-255 scale (from their own range) may pick other group sizes.
    """
    from napari_ntd._ntk import _nlbayes

    rng = np.random.default_rng(0)
    img = np.zeros((96, 96, 1), np.float32)
    img[:, 48:, 0] = np.linspace(0, 1, 48)  # the range comes from the right half
    img += 0.04 * rng.standard_normal(img.shape).astype(np.float32)
    crop = img[10:50, 0:40]  # flat: its own range is the noise's
    own, like = _pilot.nlb_params_of(crop, 0.04), _pilot.nlb_params_of(img, 0.04)
    assert own != like  # the crop alone would take other parameters
    seen = []
    real = _nlbayes.nlb_band

    def spy(noisy, guide, sigma, params, rows):
        seen.append(params)
        return real(noisy, guide, sigma, params, rows)

    monkeypatch.setattr(_nlbayes, "nlb_band", spy)
    _pilot.pilots([crop], 0.04, like=img)
    assert seen and set(seen) == set(like)
    seen.clear()
    _pilot.pilots([crop], 0.04)
    assert set(seen) == set(own)
