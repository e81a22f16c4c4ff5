"""The guided NTD (``method="guided"``, the default): pilot, kernel, twicing, SURE."""

import numpy as np
import pytest
import torch
from skimage import data, img_as_float
from skimage.metrics import peak_signal_noise_ratio as psnr

from napari_ntd import denoise_ntd
from napari_ntd._ntk._guided import guided_stack, iter_guided_plane
from napari_ntd._ntk._kernel3d import nystrom_basis_3d
from napari_ntd._ntk._nystrom import nystrom_basis
from napari_ntd._ntk._pilot import pilot as make_pilot
from napari_ntd._util._config import NTDConfig
from napari_ntd._util._progress import run_to_end

SIGMA = 25 / 255


def _case(seed=0, n=96, sigma=SIGMA):
    clean = img_as_float(data.camera())[200 : 200 + n, 220 : 220 + n]
    noisy = clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)
    return clean, noisy


@pytest.mark.parametrize("seed", [0, 1])
def test_guided_beats_faithful_nystrom(seed):
    """The ordering issue 6 locks in: improved >= faithful, on a seeded case."""
    clean, noisy = _case(seed)
    guided = denoise_ntd(noisy, sigma=SIGMA, seed=seed)  # the default
    faithful = denoise_ntd(noisy, sigma=SIGMA, seed=seed, method="nystrom")
    p_g, p_f = psnr(clean, guided, data_range=1), psnr(clean, faithful, data_range=1)
    assert p_g > p_f + 1.0, (p_g, p_f)
    assert np.array_equal(guided, denoise_ntd(noisy, sigma=SIGMA, seed=seed, method="guided"))


def test_guided_not_worse_than_its_pilot_and_sure_near_oracle():
    """MC-SURE over t (t = 0 is the pilot) lands near the best fixed t."""
    clean, noisy = _case(0)
    auto = psnr(clean, denoise_ntd(noisy, sigma=SIGMA, seed=0), data_range=1)  # the default
    pilot = psnr(clean, make_pilot(noisy[..., None], SIGMA)[..., 0], data_range=1)
    fixed = {
        t: psnr(clean, denoise_ntd(noisy, sigma=SIGMA, seed=0, n_iter=t), data_range=1)
        for t in (1, 10, 100, 1000, 10_000, 100_000)
    }
    best = max(pilot, *fixed.values())
    # measured: 29.586 against the best fixed t's 29.587 (pilot 29.527)
    assert auto >= best - 0.1, (auto, pilot, fixed)
    assert auto >= pilot
    # the candidates differ by more than the tolerance, so choosing t matters
    assert max(fixed.values()) - min(fixed.values()) > 0.4


def _assert_twicing_from_pilot(out, stack, basis, t):
    """``out`` equals t explicit steps of z <- z + W (y - z) from z = p, W = V Lambda V^T."""
    p, y = stack[1].reshape(-1), stack[0].reshape(-1)
    w = basis.vectors @ torch.diag(basis.values) @ basis.vectors.T
    z = p.clone()
    for _ in range(t):
        z = z + w @ (y - z)
    np.testing.assert_allclose(out.reshape(-1).numpy(), z.numpy(), atol=1e-8)
    assert not np.allclose(z.numpy(), p.numpy(), atol=1e-3)  # t moved it


def test_guided_closed_form_equals_iterating_from_the_pilot():
    """z^t = p + V g_t V^T (y - p) equals t steps of z <- z + W (y - z) from z = p."""
    _, noisy = _case(0, n=40)
    y = (noisy - 0.5)[..., None]
    probe = np.random.default_rng(3).standard_normal(y.shape)
    stack = guided_stack(y, SIGMA, 0.0, probe)
    st = torch.from_numpy(stack).permute(2, 0, 1).contiguous()  # float64
    t = 7
    cfg = NTDConfig(n_iter=t, n_columns=200, rank=None)
    out = run_to_end(iter_guided_plane(st, SIGMA, cfg, torch.Generator().manual_seed(0), eps=0.0))
    # the same columns, drawn the same way, give the same Nystrom basis
    rng = torch.Generator().manual_seed(0)
    p = st[1:2]
    cols = torch.randperm(p[0].numel(), generator=rng)[: cfg.columns(p[0].numel())]
    basis = run_to_end(nystrom_basis(p, cols, patch_size=11, rank=None))
    _assert_twicing_from_pilot(out, st, basis, t)


@pytest.mark.parametrize("channel_axis", [None, -1, 0])
def test_guided_channels_dtypes(channel_axis):
    rng = np.random.default_rng(0)
    clean = img_as_float(data.astronaut()[100:164, 200:264])
    noisy = np.clip(clean + SIGMA * rng.standard_normal(clean.shape), 0, 1)
    if channel_axis is None:
        clean, noisy = clean[..., 1], noisy[..., 1]
    elif channel_axis == 0:
        clean, noisy = np.moveaxis(clean, -1, 0), np.moveaxis(noisy, -1, 0)
    for img, dtype in (
        (noisy.astype(np.float32), np.float32),
        ((noisy * 255).astype(np.uint8), np.float64),
    ):
        out = denoise_ntd(img, sigma=SIGMA, channel_axis=channel_axis, seed=0)
        assert out.dtype == dtype and out.shape == img.shape
        assert psnr(clean, out, data_range=1) > psnr(clean, img_as_float(img), data_range=1) + 4


def _blobs(depth=16, sigma=0.15):
    from scipy import ndimage
    from skimage.data import binary_blobs

    clean = binary_blobs(length=32, n_dim=3, volume_fraction=0.3, blob_size_fraction=0.2, rng=1)
    clean = ndimage.gaussian_filter(clean.astype(np.float64), 1.5)[:depth]
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    return clean, clean + sigma * np.random.default_rng(0).standard_normal(clean.shape)


def test_guided_volume_is_the_3d_default_and_beats_the_papers_3d_and_slices():
    clean, noisy = _blobs()
    out = denoise_ntd(noisy, sigma=0.15, spatial_dims=3, seed=0)
    explicit = denoise_ntd(noisy, sigma=0.15, spatial_dims=3, seed=0, method="guided", patch_size=5)
    np.testing.assert_array_equal(out, explicit)
    paper = denoise_ntd(noisy, sigma=0.15, spatial_dims=3, seed=0, method="nystrom", patch_size=5)
    slices = denoise_ntd(noisy, sigma=0.15, seed=0)  # 2D guided, slice by slice
    p_g, p_n, p_s = (psnr(clean, x, data_range=1) for x in (out, paper, slices))
    assert p_g > p_n + 1.0 and p_g > p_s + 1.0, (p_g, p_n, p_s)


@pytest.mark.parametrize("method", ["exact", "dip"])
def test_volumes_take_guided_or_nystrom_only(method):
    vol = np.random.default_rng(0).random((12, 16, 16)).astype(np.float32)
    with pytest.raises(NotImplementedError, match="guided"):
        denoise_ntd(vol, spatial_dims=3, method=method, patch_size=3)


def test_guided_volume_closed_form_equals_iterating_from_the_pilot():
    """The 3D core: z^t = p + V g_t V^T (y - p) with the r x r x r Nystrom basis."""
    _, noisy = _blobs(depth=8)
    y = (noisy[:, :12, :12] - 0.5)[..., None]
    stack = guided_stack(y, 0.15, 0.0, np.zeros_like(y))
    st = torch.from_numpy(stack).permute(3, 0, 1, 2).contiguous()  # float64
    t = 5
    cfg = NTDConfig(n_iter=t, n_columns=100, rank=None, patch_size=3)
    out = run_to_end(iter_guided_plane(st, 0.15, cfg, torch.Generator().manual_seed(0), eps=0.0))
    assert out.shape == (1, 8, 12, 12)
    rng = torch.Generator().manual_seed(0)
    p = st[1:2]
    cols = torch.randperm(p[0].numel(), generator=rng)[:100]
    basis = run_to_end(nystrom_basis_3d(p, cols, patch_size=3, rank=None))
    _assert_twicing_from_pilot(out, st, basis, t)


def test_guided_tiles_by_default_and_matches_explicit_tiles():
    _, noisy = _case(0, n=130)
    a = denoise_ntd(noisy, sigma=SIGMA, seed=0)
    b = denoise_ntd(noisy, sigma=SIGMA, seed=0, tile_shape=64)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("channel_axis", [None, -1])
def test_guided_tiled_channels(channel_axis):
    """Tiles of a multichannel image: the output has the input's channels."""
    clean = img_as_float(data.astronaut()[100:200, 150:250])
    if channel_axis is None:
        clean = clean[..., 0]
    noisy = clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)
    out = denoise_ntd(noisy, sigma=SIGMA, seed=0, channel_axis=channel_axis)
    assert out.shape == noisy.shape
    assert psnr(clean, out, data_range=1) > psnr(clean, noisy, data_range=1) + 4
    # tiled ~ one piece (the filter is tile-local, so only close). Measured,
    # seeds 0-2: |tiled - whole| <= 0.028 dB, rms(tiled - whole) <= 0.043 sigma
    # (seed 0: -0.003 / +0.016 dB, 0.023 / 0.029 sigma). The last tile written
    # one pixel off: -0.47 / -0.70 dB, 0.11 sigma (passed the former 1 dB bound);
    # unnormalised weights: -18.6 dB.
    whole = denoise_ntd(noisy, sigma=SIGMA, seed=0, channel_axis=channel_axis, tile_shape=100)
    assert abs(psnr(clean, out, data_range=1) - psnr(clean, whole, data_range=1)) < 0.1
    assert np.sqrt(np.mean((out - whole) ** 2)) < 0.1 * SIGMA


@pytest.mark.parametrize("shape", [(1, 30, 30), (3, 40, 40), (2, 12, 50)])
def test_guided_thin_volumes(shape):
    """Volumes thinner than a DCT block or a patch in z still work (blocks shrink)."""
    vol = np.random.default_rng(0).random(shape).astype(np.float32)
    out = denoise_ntd(vol, spatial_dims=3, sigma=0.1, seed=0)
    assert out.shape == shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out, vol)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_guided_n_iter_zero_is_the_pilot(spatial_dims):
    """t = 0: the pilot alone (the fast setting), in the image's units."""
    _, noisy = _blobs(depth=8) if spatial_dims == 3 else _case(0, n=48)
    img = (noisy * 200 + 50).astype(np.float32)  # any units
    out = denoise_ntd(img, sigma=SIGMA * 200, n_iter=0, seed=0, spatial_dims=spatial_dims)
    np.testing.assert_allclose(out, make_pilot(img[..., None], SIGMA * 200)[..., 0], atol=2e-3)
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="guided"):
        denoise_ntd(img, sigma=SIGMA, n_iter=0, method="nystrom", spatial_dims=spatial_dims)


def _explicit_twicing(w: np.ndarray, start: np.ndarray, target: np.ndarray, ts) -> np.ndarray:
    """z^t = start + (I - (I - W)^t) (target - start) for every t, from numpy's eigh of W."""
    mu, e = np.linalg.eigh(w)
    coef = e.T @ (target - start)
    gains = 1.0 - np.clip(1.0 - mu, 0.0, None)[None, :] ** np.asarray(ts, float)[:, None]
    return start[None] + (gains * coef[None]) @ e.T  # (T, d)


def test_guided_sure_choice_equals_brute_force_mc_sure():
    """The batched core's t is the argmin of MC-SURE computed from explicit filters.

    Reference: W and W_eps as explicit matrices from the per-plane Nystrom
    basis (pilot and perturbed pilot, the same columns), z^t(y) and
    z^t(y + eps b) from numpy's eigendecomposition of W, SURE(t) =
    ||y - z^t||^2 / d - sigma^2 + 2 sigma^2 b^T (z^t_eps - z^t) / (eps d).
    """
    from napari_ntd._ntk._guided import guided_batch
    from napari_ntd._ntk._twicing import t_grid

    _, noisy = _case(0, n=32)
    y = (noisy - 0.5)[..., None]
    probe = np.random.default_rng(5).standard_normal(y.shape)
    eps = 0.01 * SIGMA
    st = torch.from_numpy(guided_stack(y, SIGMA, eps, probe)).permute(2, 0, 1).contiguous()
    cfg = NTDConfig(n_columns=150, rank=None)
    cols = torch.randperm(32 * 32, generator=torch.Generator().manual_seed(0))[:150]
    out = guided_batch(st[None], cols[None], SIGMA, cfg, eps)[0, 0].reshape(-1).numpy()

    yv, p, y_eps, p_eps, b = (st[i].reshape(-1).numpy() for i in range(5))
    ts = np.concatenate([[0], t_grid()])
    z, z_eps = (
        _explicit_twicing(
            (bas.vectors @ torch.diag(bas.values) @ bas.vectors.T).numpy(), start, target, ts
        )
        for bas, start, target in (
            (run_to_end(nystrom_basis(st[1:2], cols, patch_size=11, rank=None)), p, yv),
            (run_to_end(nystrom_basis(st[3:4], cols, patch_size=11, rank=None)), p_eps, y_eps),
        )
    )
    d = yv.size
    sure = ((yv - z) ** 2).sum(1) / d - SIGMA**2 + 2 * SIGMA**2 * ((z_eps - z) @ b) / (eps * d)
    best = int(sure.argmin())
    assert 0 < best < len(ts) - 1  # an interior choice: the test sees a wrong argmin
    np.testing.assert_allclose(out, z[best], atol=1e-8)
    # and the choice matters: neighbours on the grid give other outputs
    assert np.abs(z[best] - z[0]).max() > 1e-3


def test_guided_float32_core_matches_float64():
    """The float32 runtime path (kernel in float32, sums in float64) vs float64."""
    from napari_ntd._ntk._guided import guided_batch

    _, noisy = _case(0, n=64)
    y = (noisy - 0.5)[..., None]
    probe = np.random.default_rng(5).standard_normal(y.shape)
    st = torch.from_numpy(guided_stack(y, SIGMA, 0.0, probe)).permute(2, 0, 1).contiguous()
    cfg = NTDConfig(n_iter=300)
    cols = torch.randperm(64 * 64, generator=torch.Generator().manual_seed(0))[:82]
    ref = guided_batch(st[None], cols[None], SIGMA, cfg, 0.0)[0]
    out = guided_batch(st[None].float(), cols[None], SIGMA, cfg, 0.0)[0].double()
    # the correction V g V^T (y - p) reaches 0.021 here; float32 gets it to
    # 1.8e-4 (measured; ~1 % of it, 0.2 % of sigma). At t ~ 1e5 the directions
    # with eigenvalues near the float32 cut (1e-5) count and the paths part more.
    corr_ref = ref - st[1:2]
    assert corr_ref.abs().max() > 1e-2  # there is a correction to get right
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-3)


def _periodic_texture(n=96, period=6):
    """A random ``period x period`` block repeated: every patch recurs ~ (n / period)^2 times."""
    block = np.random.default_rng(3).random((period, period))
    reps = n // period + 1
    return np.tile(block, (reps, reps))[:n, :n]


@pytest.mark.parametrize("seed", [0, 1])
def test_guided_ntk_stage_improves_on_its_pilot(seed):
    """The NTK twicing adds to the pilot where the pilot over-smooths a fine texture.

    On a repeated random texture at sigma = 0.15 the non-local Bayes pilot
    gains ~3 dB over the noisy image; the default (SURE over t, t = 0 being
    the pilot) adds 0.33 / 0.39 dB more (noise seeds 0, 1). A SURE that
    always chose t = 0 returns the pilot and fails both checks.
    """
    sigma = 0.15
    clean = _periodic_texture()
    noisy = clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)
    out = denoise_ntd(noisy, sigma=sigma, seed=seed)
    pilot = denoise_ntd(noisy, sigma=sigma, n_iter=0)
    gain = psnr(clean, out, data_range=1) - psnr(clean, pilot, data_range=1)
    change = np.sqrt(np.mean((out - pilot) ** 2))
    assert gain > 0.2, gain
    assert change > 0.1 * sigma, change


def test_sure_does_not_undo_the_pilot_on_a_smooth_image():
    """Where the pilot is near perfect, SURE must keep t ~ 0.

    On the smooth ``clock`` crop at sigma 50 / 255 the default stayed within
    0.05 dB of its pilot (measured), where the paper's 0.01 sigma SURE
    perturbation, facing the non-local Bayes pilot's jumps, lost ~5 dB.
    """
    clean = img_as_float(data.clock())[100:196, 150:246]
    sigma = 50 / 255
    noisy = clean + sigma * np.random.default_rng(0).standard_normal(clean.shape)
    out = psnr(clean, denoise_ntd(noisy, sigma=sigma, seed=0), data_range=1)
    pilot = psnr(clean, denoise_ntd(noisy, sigma=sigma, n_iter=0), data_range=1)
    assert out > pilot - 0.15, (out, pilot)
