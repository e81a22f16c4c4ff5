"""Block motion between time-lapse frames (the motion-compensated pilot, issue 16)."""

import numpy as np
import pytest

from napari_ntd._engine import _motion


def _texture(h=48, w=56, seed=0):
    rng = np.random.default_rng(seed)
    return np.kron(rng.random((h // 4, w // 4)), np.ones((4, 4))).astype(np.float32)


@pytest.mark.parametrize("shift", [(3, -2), (-5, 6), (0, 0)])
def test_block_motion_finds_a_rigid_shift(shift):
    """Frame ``b`` is frame ``a`` moved by ``shift``: the field points there
    (away from the borders the shift leaves uncovered) and ``warp`` undoes it."""
    big = _texture(80, 80)
    a = big[16:64, 16:72, None]
    b = big[16 - shift[0] : 64 - shift[0], 16 - shift[1] : 72 - shift[1], None]
    noise = np.random.default_rng(1).standard_normal(a.shape).astype(np.float32)
    field = _motion.block_motion(a + 0.02 * noise, b, sigma=0.02)
    assert field.shape == (12, 14, 2) and field.dtype == np.int16
    inner = field[2:-2, 2:-2].reshape(-1, 2)
    assert (inner == shift).all(axis=1).mean() > 0.95, np.unique(inner, axis=0)
    back = _motion.warp(b, field)
    np.testing.assert_array_equal(back[12:-12, 12:-12], a[12:-12, 12:-12])


def test_block_motion_keeps_still_and_flat_regions_at_zero():
    """Noise alone never wins over no motion (the bias), on texture or flat."""
    rng = np.random.default_rng(2)
    for scene in (_texture(), np.full((48, 56), 0.5, np.float32)):
        a = scene[..., None] + 0.1 * rng.standard_normal((48, 56, 1)).astype(np.float32)
        b = scene[..., None] + 0.1 * rng.standard_normal((48, 56, 1)).astype(np.float32)
        # the estimates matched have much less noise than the data (sigma 0.1)
        field = _motion.block_motion(
            0.3 * a + 0.7 * scene[..., None], 0.3 * b + 0.7 * scene[..., None], 0.1
        )
        assert not field.any()


def test_compose_chains_fields():
    rng = np.random.default_rng(3)
    first = rng.integers(-2, 3, (6, 7, 2)).astype(np.int16)
    second = rng.integers(-2, 3, (6, 7, 2)).astype(np.int16)
    chained = _motion.compose(first, second)
    s = _motion.STRIDE
    for cy in range(6):
        for cx in range(7):
            ty = min(max((cy * s + s // 2 + first[cy, cx, 0]) // s, 0), 5)
            tx = min(max((cx * s + s // 2 + first[cy, cx, 1]) // s, 0), 6)
            np.testing.assert_array_equal(chained[cy, cx], first[cy, cx] + second[ty, tx])
    # two rigid shifts add up
    one = np.broadcast_to(np.array([1, -2], np.int16), (6, 7, 2))
    np.testing.assert_array_equal(_motion.compose(one, one), 2 * one)


def test_warp_reads_each_pixel_where_the_field_points():
    img = np.arange(12 * 9, dtype=np.float64).reshape(12, 9, 1)
    field = np.zeros((3, 3, 2), np.int16)
    field[1, 2] = (2, -1)  # cell rows 4..7, cols 8..8
    out = _motion.warp(img, field)
    dense = _motion.dense(field, (12, 9))
    for y in range(12):
        for x in range(9):
            yy = min(max(y + dense[y, x, 0], 0), 11)
            xx = min(max(x + dense[y, x, 1], 0), 8)
            assert out[y, x, 0] == img[yy, xx, 0]
    assert _motion.warp(img, None) is img


@pytest.mark.parametrize("shift", [(-12, 0), (9, -14)])
def test_global_shift_measures_a_drift(shift):
    big = _texture(120, 120, seed=4)
    a = big[30:90, 30:90, None]
    b = big[30 - shift[0] : 90 - shift[0], 30 - shift[1] : 90 - shift[1], None]
    assert _motion.global_shift(a, b) == shift


def test_block_motion_follows_a_drift_beyond_its_radius():
    """A stage drifting 12 px per frame (beyond +-RADIUS): the cells follow it."""
    big = _texture(120, 120, seed=5)
    a = big[30:78, 30:86, None]
    b = big[42:90, 30:86, None]  # the scene moved up by 12 rows: b(x - 12) = a(x)
    field = _motion.block_motion(a, b, sigma=0.02)
    inner = field[4:-1, 1:-1].reshape(-1, 2)  # the top 12 rows of a are not in b
    assert (inner == (-12, 0)).all(axis=1).mean() > 0.95, np.unique(inner, axis=0)
