"""DIP trainers: training, the NTK regime, the SURE stopping rule, control."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, img_as_float

from napari_ntd import denoise_ntd
from napari_ntd._dip._trainers import DIPConfig, DIPTrainer, iter_dip
from napari_ntd._ntk._kernel import exact_kernel
from napari_ntd._util._parallel import iter_in_pool

SIGMA = 0.1


def _noisy(size=32, dtype=torch.float32, channels=1, seed=0):
    if channels == 1:
        clean = img_as_float(data.camera())[100 : 100 + size, 200 : 200 + size][None]
    else:
        clean = np.moveaxis(img_as_float(data.astronaut())[30 : 30 + size, 180 : 180 + size], -1, 0)
    noisy = clean + SIGMA * np.random.default_rng(seed).standard_normal(clean.shape)
    t = lambda a: torch.tensor(a - 0.5, dtype=dtype)  # noqa: E731
    return t(clean), t(noisy)


def _run(y, sigma=None, seed=0, **kw):
    # steps on a compute worker, as DIPTrainer runs them
    gen = iter_in_pool(iter_dip(y, sigma, DIPConfig(**kw), torch.Generator().manual_seed(seed)))
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value


@pytest.mark.parametrize("arch", ["unet", "vanilla"])
@pytest.mark.parametrize("opt", ["adam", "gd", "adam+gd"])
@pytest.mark.parametrize("inp", ["image", "noise"])
def test_all_combinations_train(arch, opt, inp):
    _, y = _noisy(size=19, channels=3)  # odd size: the U-Net pads and crops
    steps, res = _run(
        y,
        architecture=arch,
        optimizer=opt,
        input=inp,
        width=8,
        patch_size=5,
        n_iter=6,
        adapt_iter=4,
    )
    assert res.estimate.shape == y.shape and res.estimate.dtype == y.dtype
    assert torch.isfinite(res.estimate).all()
    assert min(s.loss for s in steps[1:]) < steps[0].loss
    if inp == "image":  # the initial output is removed
        assert float(steps[0].estimate.abs().max()) == 0.0


def test_loss_decreases_and_adam_image_improves_psnr():
    clean, y = _noisy(size=32)
    steps, res = _run(y, width=16, n_iter=120)
    losses = [s.loss for s in steps]
    assert losses[-1] < 0.5 * losses[0]
    assert np.mean(losses[-10:]) < np.mean(losses[50:60])
    mse_in = float(((y - clean) ** 2).mean())
    mse_out = float(((res.estimate - clean) ** 2).mean())
    assert mse_out < 0.5 * mse_in


def _twicing_path(y, patch_size, n):
    theta = exact_kernel(y, patch_size)
    lam, vec = torch.linalg.eigh(theta)
    lam_max = float(lam[-1])
    coef = vec.T @ y.reshape(-1)
    path = [vec @ ((1 - (1 - lam / lam_max) ** t) * coef) for t in range(n + 1)]
    return torch.stack(path).reshape(n + 1, *y.shape), lam_max


def test_gd_vanilla_tracks_ntd_twicing():
    # a wide vanilla CNN (NTK parametrisation) trained by GD with lr = 1 / lambda_max(Theta)
    # follows z^{t+1} = z^t + Theta / lambda_max (y - z^t), i.e. denoise_ntd(method="exact")
    _, y = _noisy(size=16, dtype=torch.float64)
    noisy = (y[0] + 0.5).numpy()
    lo, hi = np.percentile(noisy, [0.5, 99.5])
    center = 0.5 * (lo + hi)  # denoise_ntd's centring
    y = torch.from_numpy(noisy - center)[None]
    n, r = 25, 5
    path, lam_max = _twicing_path(y, r, n)
    dist = {}
    for width in (128, 4096):
        steps, _ = _run(
            y,
            architecture="vanilla",
            optimizer="gd",
            width=width,
            patch_size=r,
            parametrization="ntk",
            lr=1.0 / lam_max,
            n_iter=n,
        )
        z = torch.stack([s.estimate for s in steps])
        dist[width] = float((z - path).norm() / path.norm())
    assert dist[4096] < 0.03
    assert dist[4096] < 0.5 * dist[128]
    # the closed-form path is the public exact NTD of the uncentred image
    den = denoise_ntd(noisy, method="exact", n_iter=n, patch_size=r, sigma=SIGMA)
    np.testing.assert_allclose(den - center, path[n, 0].numpy(), atol=1e-6)


def test_sure_rule_returns_its_best_iterate_and_tracks_mse():
    clean, y = _noisy(size=32)
    steps, res = _run(y, sigma=SIGMA, width=16, max_iter=60, patience=15)
    sures = [s.sure for s in steps]
    best = int(np.argmin(sures))
    assert res.iteration == steps[best].iteration
    assert res.sure == pytest.approx(sures[best])
    torch.testing.assert_close(res.estimate, steps[best].estimate)
    assert len(steps) <= 61
    # SURE is an unbiased estimate of the MSE: close to it along the run
    mse = np.array([float(((s.estimate - clean) ** 2).mean()) for s in steps])
    assert np.mean(np.abs(np.array(sures) - mse)) < 0.25 * SIGMA**2


def test_stop_request_is_honoured_at_next_iteration():
    _, y = _noisy(size=16)
    trainer = DIPTrainer(y, sigma=SIGMA, width=8, max_iter=50, seed=0)
    seen = []
    for step in trainer:
        seen.append(step.iteration)
        if step.iteration == 2:
            trainer.request_stop()
    assert seen == [0, 1, 2]
    assert trainer.result.stopped and trainer.result.n_updates == 3
    assert trainer.result.estimate.shape == y.shape


def test_seed_reproducible():
    _, y = _noisy(size=16)
    kw = dict(width=8, n_iter=5, input="noise")
    a = _run(y, seed=3, **kw)[1].estimate
    b = _run(y, seed=3, **kw)[1].estimate
    c = _run(y, seed=4, **kw)[1].estimate
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_trainer_estimates_sigma():
    _, y = _noisy(size=32)
    trainer = DIPTrainer(y, width=8, max_iter=3)
    assert trainer.sigma == pytest.approx(SIGMA, rel=0.3)
    assert trainer.run().shape == y.shape


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        (dict(optimizer="sgd"), ValueError, "optimizer"),
        (dict(architecture="resnet"), ValueError, "architecture"),
        (dict(input="zeros"), ValueError, "input"),
        (dict(width=0), ValueError, "width"),
        (dict(width=-4), ValueError, "width"),
        (dict(lr=-1.0), ValueError, "lr"),
        (dict(lr="big"), TypeError, "lr"),
        (dict(n_iter="forever"), ValueError, "n_iter"),
    ],
)
def test_bad_config(kw, exc, match):
    with pytest.raises(exc, match=match):
        DIPConfig(**kw)


def test_image_too_small_and_missing_sigma():
    with pytest.raises(ValueError, match="too small"):
        DIPTrainer(torch.zeros(1, 5, 12), sigma=0.1)
    with pytest.raises(ValueError, match="sigma"):
        next(iter_dip(torch.zeros(1, 16, 16), None, DIPConfig()))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        DIPTrainer(torch.zeros(16, 16), sigma=0.1)
