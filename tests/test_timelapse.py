"""Time-lapse stacks (``time_axis``): neighbouring frames help, motion does not ghost."""

import numpy as np
import pytest
from skimage import data, img_as_float
from skimage.metrics import peak_signal_noise_ratio as psnr

from napari_ntd import denoise_ntd, iter_denoise_ntd
from napari_ntd._engine._timelapse import reach

SIGMA = 0.1


def _static(frames=5, seed=0):
    scene = img_as_float(data.camera())[180:244, 200:264].astype(np.float32)
    clean = np.repeat(scene[None], frames, axis=0)
    noisy = clean + SIGMA * np.random.default_rng(seed).standard_normal(clean.shape)
    return clean, noisy.astype(np.float32)


def _moving(frames=6, step=4, seed=0):
    """A textured background and a bright square moving ``step`` px per frame."""
    rng = np.random.default_rng(1)
    bg = np.kron(rng.random((6, 6)), np.ones((8, 8))) * 0.3 + 0.2
    clean = np.repeat(bg[None], frames, axis=0).astype(np.float32)
    boxes = []
    for t in range(frames):
        y0, x0 = 18, 6 + step * t
        clean[t, y0 : y0 + 10, x0 : x0 + 10] = 0.9
        boxes.append((y0, x0))
    noisy = clean + SIGMA * np.random.default_rng(seed).standard_normal(clean.shape)
    return clean, noisy.astype(np.float32), boxes


def _psnr(clean, out):
    return np.mean([psnr(c, o, data_range=1) for c, o in zip(clean, out, strict=True)])


def test_static_scene_gains_over_frame_by_frame():
    clean, noisy = _static()
    frames = _psnr(clean, denoise_ntd(noisy, sigma=SIGMA, seed=0))
    movie = _psnr(clean, denoise_ntd(noisy, sigma=SIGMA, seed=0, time_axis=0))
    assert movie > frames + 1.0, (movie, frames)  # measured +1.5 dB


def test_moving_object_is_not_smeared():
    """Centroid and brightness of the moving square kept per frame; nothing left
    where it was one frame earlier (no ghost)."""
    clean, noisy, boxes = _moving()
    out = denoise_ntd(noisy, sigma=SIGMA, seed=0, time_axis=0)
    for t, (y0, x0) in enumerate(boxes):
        inside = out[t, y0 + 2 : y0 + 8, x0 + 2 : x0 + 8].mean()
        assert abs(inside - 0.9) < 0.05, (t, inside)
        box = (t, slice(y0 - 4, y0 + 14), slice(max(x0 - 4, 0), x0 + 14))
        err = np.abs(out[box] - clean[box]).mean()
        assert err < 0.6 * SIGMA, (t, err)
        yy, xx = np.nonzero(out[t] > 0.75)
        assert abs(yy.mean() - (y0 + 4.5)) < 0.5 and abs(xx.mean() - (x0 + 4.5)) < 0.5
        if t:  # where the square was a frame ago: background again
            py, px = boxes[t - 1]
            was = (t, slice(py + 2, py + 8), slice(px + 2, px + 6))
            gone = (out[was] - clean[was]).mean()
            assert gone < 0.05, (t, gone)


def test_motion_compensation_follows_a_fast_textured_object(monkeypatch):
    """A textured square moving 5 px per frame (beyond the +-2 px search window):
    with the neighbours warped onto each frame and the windows following the
    motion, the square is far better restored than without (measured +1.5 to
    +2.5 dB per frame)."""
    from napari_ntd._engine import _timelapse

    rng = np.random.default_rng(1)
    bg = np.kron(rng.random((8, 8)), np.ones((8, 8))) * 0.3 + 0.2
    obj = np.kron(rng.random((5, 5)), np.ones((4, 4))) * 0.5 + 0.45
    clean = np.repeat(bg[None], 6, axis=0).astype(np.float32)
    for t in range(6):
        clean[t, 20:40, 4 + 5 * t : 24 + 5 * t] = obj
    noisy = clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)
    noisy = noisy.astype(np.float32)

    def square_psnr(out):
        return np.array(
            [
                psnr(
                    clean[t, 16:44, 5 * t : 28 + 5 * t],
                    out[t, 16:44, 5 * t : 28 + 5 * t],
                    data_range=1,
                )
                for t in range(6)
            ]
        )

    followed = square_psnr(denoise_ntd(noisy, sigma=SIGMA, seed=0, time_axis=0))
    monkeypatch.setattr(_timelapse, "MOTION", False)
    still = square_psnr(denoise_ntd(noisy, sigma=SIGMA, seed=0, time_axis=0))
    assert (followed > still + 0.8).all() and followed.mean() > still.mean() + 1.5, (
        followed,
        still,
    )


def test_a_drifting_stage_still_gains_over_frame_by_frame():
    """The whole scene drifts 12 px per frame (beyond the block matching's
    radius): the frame's drift (phase correlation) centres the matching, and
    the time-lapse keeps its gain (measured +2.6 dB; without the drift it fell
    0.6 dB below frame by frame)."""
    big = img_as_float(data.camera()).astype(np.float32)
    clean = np.stack([big[100 + 12 * t : 164 + 12 * t, 150:214] for t in range(5)])
    noisy = clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)
    noisy = noisy.astype(np.float32)
    frames = _psnr(clean, denoise_ntd(noisy, sigma=SIGMA, seed=0))
    movie = _psnr(clean, denoise_ntd(noisy, sigma=SIGMA, seed=0, time_axis=0))
    assert movie > frames + 1.0, (movie, frames)


def test_ntk_stage_kernel_takes_space_time_patches(monkeypatch):
    """With ``n_iter > 0`` the NTK kernel's input is the frame's pilot and the
    pilots of frames t - 1 and t + 1 (here without motion, at a noise level
    where the pilot is the last pass itself), the same affine centring for all."""
    from napari_ntd._engine import _timelapse
    from napari_ntd._ntk import _guided

    monkeypatch.setattr(_timelapse, "MOTION", False)
    _, noisy, _ = _moving(frames=4)
    noisy = noisy + SIGMA * np.random.default_rng(9).standard_normal(noisy.shape)
    sigma = float(np.hypot(SIGMA, SIGMA))
    pilots = denoise_ntd(noisy, sigma=sigma, time_axis=0, n_iter=0)
    seen = []
    real = _guided.iter_guided

    def spy(stack, *args, **kwargs):
        seen.append(stack.numpy().copy())
        return (yield from real(stack, *args, **kwargs))

    monkeypatch.setattr(_guided, "iter_guided", spy)
    out = denoise_ntd(noisy, sigma=sigma, time_axis=0, n_iter=3)
    assert len(seen) == 4 and not np.allclose(out, pilots, atol=1e-4)  # the stage ran
    for t, stack in enumerate(seen):
        near = [j for j in (t - 1, t + 1) if 0 <= j < 4]
        n = 1 + len(near)
        assert stack.shape[0] == 2 * n
        data, guide = stack[:n], stack[n : 2 * n]
        # the guide's channel 0 is the frame's pilot, centred and scaled: find the map
        a, b = np.polyfit(pilots[t].ravel(), guide[0].ravel(), 1)
        np.testing.assert_allclose(a * pilots[t] + b, guide[0], atol=1e-4)
        for k, j in enumerate(near, start=1):
            np.testing.assert_allclose(a * pilots[j] + b, guide[k], atol=1e-4)
            np.testing.assert_array_equal(data[k], guide[k])  # no residual there
        np.testing.assert_allclose(data[0], a * noisy[t] + b, atol=1e-4)


def test_dask_chunks_along_time_equal_numpy():
    da = pytest.importorskip("dask.array")
    _, noisy, _ = _moving(frames=7)
    kw = {"sigma": SIGMA, "seed": 3, "time_axis": 0, "time_window": 1, "n_iter": 5}
    ref = denoise_ntd(noisy, **kw)
    for chunks in (2, 3, 7):
        lazy = denoise_ntd(da.from_array(noisy, chunks=(chunks, -1, -1)), **kw)
        assert lazy.shape == noisy.shape and lazy.dtype == np.float32
        np.testing.assert_array_equal(lazy.compute(), ref)


def test_a_frame_reads_only_its_reach():
    """Output frame t depends on input frames t - reach .. t + reach only."""
    n = reach(1) + 2
    _, noisy, _ = _moving(frames=n + 2)
    kw = {"sigma": SIGMA, "time_axis": 0, "time_window": 1}
    full = denoise_ntd(noisy, **kw)
    cut = denoise_ntd(noisy[:n], **kw)
    keep = n - reach(1)
    np.testing.assert_array_equal(cut[:keep], full[:keep])
    assert not np.array_equal(cut[keep:], full[keep:n])  # the cut is seen past the reach


def test_axes_channels_and_leading_axes():
    _, noisy, _ = _moving(frames=4)
    kw = {"sigma": SIGMA, "time_window": 1}
    ref = denoise_ntd(noisy, time_axis=0, **kw)
    last = denoise_ntd(np.moveaxis(noisy, 0, -1), time_axis=-1, **kw)
    np.testing.assert_array_equal(np.moveaxis(last, -1, 0), ref)
    rgb = np.stack([noisy, noisy[:, ::-1], noisy[:, :, ::-1]], axis=1)  # (T, C, H, W)
    out = denoise_ntd(rgb, time_axis=0, channel_axis=1, **kw)
    assert out.shape == rgb.shape and np.isfinite(out).all()
    two = denoise_ntd(np.stack([noisy, noisy]), time_axis=1, **kw)  # two movies
    np.testing.assert_array_equal(two[0], ref)
    np.testing.assert_array_equal(two[1], ref)


def test_poisson_counts_keep_their_units():
    rng = np.random.default_rng(0)
    clean, _, _ = _moving(frames=4)
    counts = rng.poisson(40 * clean).astype(np.uint16)
    out = denoise_ntd(counts, time_axis=0, preserve_range=True, noise_model="poisson")
    assert out.dtype == np.float64 and out.shape == counts.shape
    assert abs(out.mean() - counts.mean()) < 0.05 * counts.mean()
    err_out = np.mean((out / 40 - clean) ** 2)
    err_in = np.mean((counts / 40 - clean) ** 2)
    assert err_out < 0.25 * err_in


@pytest.mark.parametrize("n_iter", [0, 3])
def test_progress_reaches_the_total(n_iter):
    """Steps rise one by one to the total (with the NTK stage: the tasks of each
    frame's kernel, whose channel count differs at the movie's ends)."""
    _, noisy, _ = _moving(frames=3)
    gen = iter_denoise_ntd(noisy, sigma=SIGMA, time_axis=0, time_window=1, n_iter=n_iter)
    steps = []
    try:
        while True:
            steps.append(next(gen))
    except StopIteration as stop:
        out = stop.value
    assert out.shape == noisy.shape
    done = [d for d, _ in steps]
    assert done == list(range(1, len(steps) + 1)) and steps[-1][0] == steps[-1][1]
    assert len({total for _, total in steps}) == 1
    assert len(steps) == 3 if n_iter == 0 else len(steps) > 3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"time_window": 1}, TypeError, "give time_axis"),
        ({"time_axis": 0, "method": "nystrom"}, NotImplementedError, "guided"),
        ({"time_axis": 0, "n_iter": "auto"}, NotImplementedError, "SURE"),
        ({"time_axis": 0, "spatial_dims": 3}, ValueError, "2D frames"),
        ({"time_axis": 0, "time_window": -1}, ValueError, "time_window"),
        ({"time_axis": 3}, ValueError, "invalid"),
        ({"time_axis": 0, "channel_axis": 0}, ValueError, "one axis"),
    ],
)
def test_time_options_are_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        denoise_ntd(np.zeros((3, 16, 16), np.float32), sigma=0.1, **kwargs)


@pytest.mark.parametrize("shape", [(3, 6, 6), (2, 1, 9), (3, 5, 40)])
def test_small_frames(shape):
    """Frames smaller than the non-local Bayes patch: the patch shrinks to fit."""
    noisy = np.random.default_rng(0).random(shape)
    out = denoise_ntd(noisy, sigma=0.1, time_axis=0)  # the pilot alone: no NTK patch
    assert out.shape == shape and np.isfinite(out).all()
    with pytest.raises(ValueError, match="smaller than the patch"):
        denoise_ntd(noisy, sigma=0.1, time_axis=0, n_iter=5)
