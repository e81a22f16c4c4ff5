"""Options that fit the method (issue 15): no keyword is silently ignored."""

import numpy as np
import pytest

from napari_ntd import check_options, denoise_ntd

IMG = np.random.default_rng(0).random((24, 24))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "exact", "n_columns": 100}, "n_columns does not apply to method='exact'"),
        ({"method": "exact", "rank": 10}, "rank does not apply"),
        ({"method": "exact", "rank": None}, "rank does not apply"),  # None is a value
        ({"block_pixels": 1024}, "block_pixels does not apply to method='guided'"),
        ({"method": "exact", "n_columns": 9, "rank": 9}, "n_columns, rank do not apply"),
        ({"architecture": "vanilla"}, "architecture applies to the DIP trainers"),
        ({"method": "nystrom", "width": 8, "lr": 0.1}, "width, lr apply to the DIP"),
    ],
)
def test_a_keyword_the_method_ignores_raises(kwargs, match):
    with pytest.raises(TypeError, match=match):
        denoise_ntd(IMG, **kwargs)
    if not set(kwargs) & {"architecture", "width", "lr"}:  # not options of check_options
        with pytest.raises(TypeError, match=match):
            check_options(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "nystrom", "n_columns": 64, "rank": 32, "block_pixels": 100},
        {"method": "guided", "n_columns": 64, "rank": 32},
        {"method": "exact", "n_iter": 3},
        {"n_columns": 0.02, "rank": 256},  # the defaults, given explicitly
    ],
)
def test_keywords_the_method_uses_are_accepted(kwargs):
    check_options(**kwargs)
    assert np.isfinite(denoise_ntd(IMG, sigma=0.1, seed=0, **kwargs)).all()


def test_explicit_defaults_equal_omitted_ones():
    a = denoise_ntd(IMG, method="nystrom", sigma=0.1, seed=0)
    b = denoise_ntd(
        IMG, method="nystrom", sigma=0.1, seed=0, n_columns=0.02, rank=256, block_pixels=4096
    )
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"method": "bm3d"}, ValueError, "unknown method"),
        ({"n_iter": "many"}, ValueError, "n_iter"),
        ({"patch_size": 4}, ValueError, "patch_size"),
        ({"tile_shape": 3}, ValueError, "too small"),
        ({"max_memory": "lots"}, ValueError, "max_memory"),
        ({"noise_model": "speckle"}, ValueError, "noise_model"),
        ({"noise_model": "poisson", "sigma": 0.1}, ValueError, "sigma applies"),
        ({"spatial_dims": 4}, ValueError, "spatial_dims"),
        ({"device": "tpu"}, ValueError, "device"),
        ({"bogus": 1}, TypeError, "unknown option"),
    ],
)
def test_check_options_raises_what_denoise_ntd_raises(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        check_options(**kwargs)
    if "bogus" not in kwargs:
        with pytest.raises(exc, match=match):
            denoise_ntd(IMG, **kwargs)
