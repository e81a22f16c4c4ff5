"""Dask arrays in, lazy dask arrays out; equal to numpy; runs on distributed."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, img_as_float

da = pytest.importorskip("dask.array")

from napari_ntd import denoise_ntd  # noqa: E402

FAST = {"patch_size": 5, "n_columns": 64, "n_iter": 3, "sigma": 0.1, "seed": 11}


@pytest.fixture(scope="module")
def stack():
    clean = img_as_float(data.camera())[100:148, 200:248]
    frames = np.stack([clean, clean.T, clean[::-1], clean[:, ::-1]])
    noisy = frames + 0.1 * np.random.default_rng(0).standard_normal(frames.shape)
    return noisy.astype(np.float32)


@pytest.fixture(scope="module")
def expected(stack):
    return denoise_ntd(stack, **FAST)


@pytest.mark.parametrize("chunks", [(1, 48, 48), (3, 48, 48), (2, 24, 30)])
def test_dask_in_dask_out_equals_numpy(stack, expected, chunks):
    import dask

    calls = []

    def load():
        calls.append(1)
        return stack

    lazy = da.from_delayed(dask.delayed(load)(), shape=stack.shape, dtype=stack.dtype)
    out = denoise_ntd(lazy.rechunk(chunks), **FAST)
    assert isinstance(out, da.Array)
    assert not calls  # lazy: the input has not even been loaded
    assert out.dtype == np.float32 and out.shape == stack.shape
    np.testing.assert_array_equal(out.compute(scheduler="sync"), expected)


def test_dask_single_image_and_channels():
    rgb = img_as_float(data.astronaut())[30:70, 180:220]
    noisy = rgb + 0.05 * np.random.default_rng(2).standard_normal(rgb.shape)
    chw = np.moveaxis(noisy, -1, 0)
    out = denoise_ntd(da.from_array(chw, chunks=(1, 20, 20)), channel_axis=0, **FAST)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(
        out.compute(scheduler="sync"), denoise_ntd(chw, channel_axis=0, **FAST)
    )


def test_dask_uint16_dtype_rule(stack):
    u16 = (np.clip(stack, 0, 1) * 65535).astype(np.uint16)
    out = denoise_ntd(da.from_array(u16, chunks=(2, 48, 48)), **FAST)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out.compute(scheduler="sync"), denoise_ntd(u16, **FAST))


def test_dask_bad_input_is_eager():
    with pytest.raises(NotImplementedError, match="2D"):
        denoise_ntd(da.zeros(30, chunks=10))
    with pytest.raises(TypeError, match="complex"):
        denoise_ntd(da.zeros((20, 20), dtype=complex))


def test_local_cluster_matches_numpy(stack, expected):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        out = denoise_ntd(da.from_array(stack, chunks=(2, 48, 48)), **FAST)
        result = client.compute(out).result()
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_dask_default_options_equal_numpy(spatial_dims):
    """The library defaults (patch_size=None: 11, or 5 for guided volumes) pass through."""
    vol = np.random.default_rng(5).random((2, 10, 26, 26)).astype(np.float32)
    opts = {"sigma": 0.1, "seed": 3, "n_iter": 2, "spatial_dims": spatial_dims}
    lazy = da.from_array(vol, chunks=(1, 10, 13, 26))
    np.testing.assert_array_equal(
        denoise_ntd(lazy, **opts).compute(scheduler="sync"), denoise_ntd(vol, **opts)
    )
