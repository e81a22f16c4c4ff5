"""Stacks (leading axes as independent 2D images) and true 3D patches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage
from skimage import data, img_as_float

from napari_ntd import denoise_ntd, iter_denoise_ntd

FAST = {"method": "nystrom", "patch_size": 5, "n_columns": 64, "n_iter": 3, "sigma": 0.1}


@pytest.fixture(scope="module")
def stack():
    clean = img_as_float(data.camera())[100:148, 200:248]
    frames = np.stack([clean, clean[::-1], clean[:, ::-1]])
    return frames + 0.1 * np.random.default_rng(0).standard_normal(frames.shape)


def test_slicewise_equals_looping_2d_calls(stack):
    out = denoise_ntd(stack, seed=7, **FAST)
    assert out.shape == stack.shape
    for k in range(len(stack)):
        np.testing.assert_array_equal(out[k], denoise_ntd(stack[k], seed=7 + k, **FAST))


def test_4d_uses_flat_index_seeds(stack):
    st4 = stack[:2].reshape(1, 2, 48, 48)
    st4 = np.concatenate([st4, st4[:, ::-1]])  # (2, 2, 48, 48)
    out = denoise_ntd(st4, seed=3, **FAST)
    for i, j in np.ndindex(2, 2):
        expected = denoise_ntd(st4[i, j], seed=3 + 2 * i + j, **FAST)
        np.testing.assert_array_equal(out[i, j], expected)


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_stack_of_multichannel_images(channel_axis):
    rgb = img_as_float(data.astronaut())[30:70, 180:220]
    frames = np.stack([rgb, rgb[::-1]]) + 0.05 * np.random.default_rng(1).standard_normal(
        (2, 40, 40, 3)
    )
    arr = np.moveaxis(frames, -1, channel_axis)
    out = denoise_ntd(arr, channel_axis=channel_axis, seed=0, **FAST)
    assert out.shape == arr.shape
    for k in range(2):
        axis = channel_axis - 1 if channel_axis > 0 else channel_axis
        single = denoise_ntd(arr[k], channel_axis=axis, seed=k, **FAST)
        np.testing.assert_array_equal(out[k], single)


def test_stack_progress_is_monotone_and_complete(stack):
    steps = list(_drive(iter_denoise_ntd(stack, seed=0, **FAST)))
    done = [d / t for d, t in steps]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(done))
    assert done[-1] == 1.0


def _drive(gen):
    while True:
        try:
            yield next(gen)
        except StopIteration:
            return


def test_stack_dtype_rule(stack):
    out = denoise_ntd(stack.astype(np.float32), seed=0, **FAST)
    assert out.dtype == np.float32
    u8 = (np.clip(stack, 0, 1) * 255).astype(np.uint8)
    assert denoise_ntd(u8, seed=0, **FAST).dtype == np.float64


def test_volume_with_one_slice_equals_2d(stack):
    # zero padding in z only rescales the kernel, which the eigenvalue
    # normalisation removes: same columns -> the same filter as 2D
    vol = denoise_ntd(stack[:1], spatial_dims=3, seed=4, **FAST)
    flat = denoise_ntd(stack[0], seed=4, **FAST)
    np.testing.assert_allclose(vol[0], flat, atol=1e-7)


def _blobs_volume():
    from skimage.data import binary_blobs

    clean = binary_blobs(length=32, n_dim=3, volume_fraction=0.3, rng=2).astype(float)
    clean = ndimage.gaussian_filter(clean, 1.0)[:12]
    noisy = clean + 0.15 * np.random.default_rng(3).standard_normal(clean.shape)
    return clean, noisy


def test_3d_patches_denoise_a_volume():
    clean, noisy = _blobs_volume()
    opts = {"patch_size": 3, "n_columns": 128, "sigma": 0.15, "seed": 0}
    out3 = denoise_ntd(noisy, spatial_dims=3, **opts)
    assert out3.shape == noisy.shape
    assert np.mean((out3 - clean) ** 2) < 0.3 * np.mean((noisy - clean) ** 2)
    # a 4D (T, Z, Y, X) input: time is a leading axis, volumes use seed + t
    out4 = denoise_ntd(np.stack([noisy, noisy]), spatial_dims=3, n_iter=2, **{**opts, "seed": 5})
    np.testing.assert_array_equal(
        out4[1], denoise_ntd(noisy, spatial_dims=3, n_iter=2, **{**opts, "seed": 6})
    )


@pytest.mark.parametrize(
    ("image", "kwargs", "exc", "match"),
    [
        (np.zeros((4, 20, 20)), {"spatial_dims": 4}, ValueError, "spatial_dims"),
        (np.zeros((20, 20)), {"spatial_dims": 3}, NotImplementedError, "3D"),
        (
            np.zeros((4, 20, 20)),
            {"spatial_dims": 3, "method": "exact"},
            NotImplementedError,
            "nystrom",
        ),
        (np.zeros((5, 20, 3)), {}, NotImplementedError, "channel_axis=-1"),
        (np.zeros((5, 8, 30)), {}, ValueError, "smaller than the patch"),
    ],
)
def test_bad_stack_input(image, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        denoise_ntd(image, **kwargs)
