"""Stage 5: training a network on the noisy image itself (sections 5-6).

The deep image prior (DIP) family of denoisers of the paper: a bias-free
ReLU CNN (``_networks``) is fitted to the noisy image ``y`` with the squared
loss ``1/2 ||z(w) - y||^2`` and stopped early.

* ``input="image"``: the network input is ``y`` and its random initial
  output is removed, ``z~(w) = z(w) - z(w^0)`` (so ``z~^0 = 0``, as in
  twicing). ``input="noise"``: the input is iid ``N(0, 1)`` noise drawn from
  the seeded generator (the original DIP).
* ``optimizer="gd"``: plain gradient descent with the learning rate
  ``1 / lambda_max(J J^T)`` of the network at initialisation (power
  iteration), which is ``O(1 / c)`` in the standard parametrisation and
  makes a wide network follow the twicing ``z <- z + W (y - z)`` with
  ``W = Theta / lambda_max`` (eq. 7). ``optimizer="adam"``: Adam with
  ``betas = (0.9, 0.999)``. ``optimizer="adam+gd"``: the adapted filter of
  appendix I.4 -- Adam first, then the output is reset to zero and gradient
  descent continues from the adapted (now essentially fixed) kernel.

Stopping without the clean image
--------------------------------
``n_iter="auto"`` keeps the iterate with the smallest Monte-Carlo SURE
estimate of its mean squared error (Ramani, Blu & Unser 2008). The trained
estimate ``z^t(y)`` is a deterministic function of ``y`` once the initial
weights and the input noise are fixed, so its divergence is measured by
training a *twin* network from the same initial weights on
``y + eps b`` (``b ~ N(0, I)``) in lock step::

    SURE(t) = ||y - z^t(y)||^2 / n - sigma^2 + 2 sigma^2 b^T (z^t(y + eps b) - z^t(y)) / (eps n)

This is the same estimator the closed-form twicing uses (``_twicing``),
applied to the whole training map, so it accounts for the weights' dependence
on ``y`` -- unlike SURE on the network's input-output map at fixed weights,
which misses exactly the overfitting we want to detect, and unlike ES-WMV
(windowed moving variance of the iterates), a heuristic with no noise model
and a window/patience to tune. It costs a second training (2x the time), and
needs ``sigma`` (estimated from ``y`` by the callers when not given). The run
ends after ``max_iter`` iterations or when SURE has not improved for
``patience`` iterations.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .._util._parallel import iter_in_pool
from ._networks import (
    ARCHITECTURES,
    PARAMETRIZATIONS,
    UNET_MULTIPLE,
    make_network,
    ntk_top_eigenvalue,
    pad_to_multiple,
)

__all__ = [
    "OPTIMIZERS",
    "INPUTS",
    "DEFAULT_WIDTH",
    "PAPER_WIDTH",
    "DIPConfig",
    "DIPStep",
    "DIPResult",
    "DIPTrainer",
    "iter_dip",
    "iter_dip_plane",
    "sure_value",
]

OPTIMIZERS = ("adam", "gd", "adam+gd")
INPUTS = ("image", "noise")

#: CPU-friendly default widths (a 256 x 256 image in minutes on 2 cores).
DEFAULT_WIDTH = {"unet": 32, "vanilla": 64}
#: The paper's widths (appendix H).
PAPER_WIDTH = {"unet": 128, "vanilla": 512}
#: Default iteration caps for ``n_iter="auto"`` (the paper allows 1e6).
DEFAULT_MAX_ITER = {"adam": 1500, "gd": 3000, "adam+gd": 1500}
#: Default Adam learning rate times the width (``lr = ADAM_LR_WIDTH / c``, capped).
ADAM_LR_WIDTH = 0.16
ADAM_LR_MAX = 5e-3
#: Adam iterations before switching to gradient descent (``"adam+gd"``, fixed n_iter).
DEFAULT_ADAPT_ITER = 300
#: Monte-Carlo SURE perturbation, relative to sigma.
SURE_EPS = 0.3
#: Training has diverged when the loss exceeds this many times its initial value.
DIVERGED = 1e6
#: Smallest image side for the U-Net (three 2x downsamplings).
MIN_SIDE = {"unet": UNET_MULTIPLE, "vanilla": 1}


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


@dataclass(frozen=True)
class DIPConfig:
    """Options of a DIP training run (see :func:`iter_dip`).

    Attributes
    ----------
    architecture : {'unet', 'vanilla'}
        Network of appendix H.2 (U-Net) or H.1 (one hidden layer).
    optimizer : {'adam', 'gd', 'adam+gd'}
        Adam (betas 0.9, 0.999), plain gradient descent, or Adam then gradient
        descent with the adapted kernel (appendix I.4).
    input : {'image', 'noise'}
        Network input: the noisy image (output offset removed) or iid noise.
    width : int or None
        Hidden channels ``c``; ``None`` uses :data:`DEFAULT_WIDTH` (32 for the
        U-Net, 64 for the vanilla CNN; the paper uses 128 and 512).
    lr : float or None
        Learning rate. ``None``: Adam ``min(5e-3, 0.16/c)``; gradient descent
        ``1 / lambda_max(J J^T)`` at initialisation (``O(1/c)``).
    n_iter : int or 'auto'
        Fixed number of updates (the last iterate is returned), or ``'auto'``:
        best iterate by Monte-Carlo SURE, up to ``max_iter``.
    max_iter, patience : int or None
        Cap and early-stop patience of ``'auto'`` (``None``: per-optimizer
        defaults; patience ``max(100, t_best)``, i.e. stop once the run is
        twice as long as the best iterate and 100 iterations past it).
    adapt_iter : int or None
        Adam iterations of ``'adam+gd'`` (``None``: the SURE-best Adam iterate
        with ``'auto'``, else 300); ``n_iter`` then counts the GD iterations.
    patch_size : int
        First convolution of the vanilla CNN (paper: 11).
    parametrization : {'standard', 'ntk'}
        Weight parametrisation (``_networks``); ``'ntk'`` makes gradient
        descent follow the kernel of ``denoise_ntd`` including its first-layer
        term.
    """

    architecture: str = "unet"
    optimizer: str = "adam"
    input: str = "image"
    width: int | None = None
    lr: float | None = None
    n_iter: int | str = "auto"
    max_iter: int | None = None
    patience: int | None = None
    adapt_iter: int | None = None
    patch_size: int = 11
    parametrization: str = "standard"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("architecture", ARCHITECTURES),
            ("optimizer", OPTIMIZERS),
            ("input", INPUTS),
            ("parametrization", PARAMETRIZATIONS),
        ):
            val = getattr(self, name)
            if val not in allowed:
                raise ValueError(f"unknown {name} {val!r}; expected one of {allowed}")
        if self.width is not None and (not _is_int(self.width) or self.width <= 0):
            raise ValueError(f"width must be a positive int or None, got {self.width!r}")
        if self.lr is not None:
            if isinstance(self.lr, bool) or not isinstance(self.lr, numbers.Real):
                raise TypeError(f"lr must be a positive float or None, got {self.lr!r}")
            if not (math.isfinite(self.lr) and self.lr > 0):
                raise ValueError(f"lr must be a positive finite float, got {self.lr!r}")
        if isinstance(self.n_iter, str):
            if self.n_iter != "auto":
                raise ValueError(f"n_iter must be 'auto' or an int >= 0, got {self.n_iter!r}")
        elif not _is_int(self.n_iter) or self.n_iter < 0:
            raise ValueError(f"n_iter must be 'auto' or an int >= 0, got {self.n_iter!r}")
        for name in ("max_iter", "patience", "adapt_iter"):
            val = getattr(self, name)
            if val is not None and (not _is_int(val) or val < 1):
                raise ValueError(f"{name} must be a positive int or None, got {val!r}")
        if not _is_int(self.patch_size) or self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be a positive odd int, got {self.patch_size!r}")

    @property
    def c(self) -> int:
        """The hidden width in use."""
        return self.width if self.width is not None else DEFAULT_WIDTH[self.architecture]

    @property
    def iter_cap(self) -> int:
        """``max_iter`` or its per-optimizer default."""
        return self.max_iter if self.max_iter is not None else DEFAULT_MAX_ITER[self.optimizer]


@dataclass(frozen=True)
class DIPStep:
    """One progress record: the estimate ``z^t`` after ``iteration`` updates.

    ``loss`` is the mean squared residual ``||y - z^t||^2 / n``; ``sure`` the
    Monte-Carlo SURE estimate of the MSE (``None`` without the twin, i.e.
    for a fixed ``n_iter``); ``phase`` is ``'adam'`` or ``'gd'``; ``total``
    the planned number of records (the run may end earlier). ``estimate`` is
    the centred ``(C, H, W)`` output (do not modify it).
    """

    iteration: int
    total: int
    loss: float
    sure: float | None
    estimate: torch.Tensor
    phase: str


@dataclass(frozen=True)
class DIPResult:
    """Outcome of a run: the chosen estimate, its iteration and SURE score."""

    estimate: torch.Tensor
    iteration: int
    sure: float | None
    n_updates: int
    stopped: bool


def sure_value(
    y: torch.Tensor,
    z: torch.Tensor,
    z_eps: torch.Tensor,
    probe: torch.Tensor,
    sigma: float,
    eps: float,
) -> float:
    """Monte-Carlo SURE of the per-element MSE of ``z = f(y)`` (``z_eps = f(y + eps probe)``)."""
    n = y.numel()
    res = float(((y - z).double() ** 2).sum())
    div = float((probe.double() * (z_eps - z).double()).sum()) / eps
    return res / n - sigma**2 + 2.0 * sigma**2 * div / n


class _Run:
    """One network fitted to one target: weights, input, output offset, optimizer."""

    def __init__(self, target: torch.Tensor, model, x: torch.Tensor, crop, offset: bool):
        self.target = target
        self.model = model
        self.x = x
        self.crop = crop
        self.z0 = self.raw().detach() if offset else None
        self.opt: torch.optim.Optimizer | None = None

    def raw(self) -> torch.Tensor:
        return self.model(self.x)[0][:, self.crop[0], self.crop[1]]

    def output(self, grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            z = self.raw()
            return z if self.z0 is None else z - self.z0

    def update(self, z: torch.Tensor) -> None:
        loss = 0.5 * ((z - self.target) ** 2).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def reset_offset(self) -> None:
        """Make the current output the new zero (start of twicing, appendix I.4)."""
        self.z0 = self.raw().detach()

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.model.parameters()]

    def restore(self, weights: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, w in zip(self.model.parameters(), weights, strict=True):
                p.copy_(w)


def _adam_lr(cfg: DIPConfig) -> float:
    return cfg.lr if cfg.lr is not None else min(ADAM_LR_MAX, ADAM_LR_WIDTH / cfg.c)


def _gd_lr(cfg: DIPConfig, run: _Run, gen: torch.Generator) -> float:
    if cfg.lr is not None:
        return cfg.lr
    lam = ntk_top_eigenvalue(run.model, run.x, crop=run.crop, generator=gen)
    return 1.0 / lam


def _make_runs(
    y: torch.Tensor, cfg: DIPConfig, gen: torch.Generator, y_eps: torch.Tensor | None
) -> list[_Run]:
    nch, h, w = y.shape
    model = make_network(
        cfg.architecture,
        nch,
        nch,
        cfg.c,
        patch_size=cfg.patch_size,
        parametrization=cfg.parametrization,
        generator=gen,
        dtype=y.dtype,
        device=y.device,
    )
    mult = model.multiple
    if cfg.input == "noise":
        hp, wp = h + (-h) % mult, w + (-w) % mult
        noise = torch.randn((1, nch, hp, wp), generator=gen, dtype=y.dtype).to(y.device)
        _, crop = pad_to_multiple(y, mult)
    targets = [y] if y_eps is None else [y, y_eps]
    runs = []
    for k, target in enumerate(targets):
        net = model if k == 0 else _clone(model)
        if cfg.input == "image":
            x, crop = pad_to_multiple(target[None], mult)
        else:
            x = noise
        runs.append(_Run(target, net, x, crop, offset=cfg.input == "image"))
    return runs


def _clone(model):
    import copy

    return copy.deepcopy(model)


def _set_optimizer(runs: list[_Run], kind: str, lr: float) -> None:
    for run in runs:
        params = list(run.model.parameters())
        if kind == "adam":
            run.opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
        else:
            run.opt = torch.optim.SGD(params, lr=lr, momentum=0.0)


def check_image(y: torch.Tensor, cfg: DIPConfig) -> None:
    """Raise a clear error when ``y`` is not a usable ``(C, H, W)`` image for ``cfg``."""
    if not isinstance(y, torch.Tensor) or y.ndim != 3:
        shape = getattr(y, "shape", None)
        raise ValueError(f"expected a (C, H, W) tensor, got {type(y).__name__} of shape {shape}")
    if not y.is_floating_point():
        raise TypeError(f"expected a floating point tensor, got {y.dtype}")
    side = MIN_SIDE[cfg.architecture]
    h, w = y.shape[-2:]
    if min(h, w) < side:
        raise ValueError(
            f"image ({h} x {w}) is too small for the {cfg.architecture} "
            f"(at least {side} x {side} pixels: it downsamples three times)"
        )


def iter_dip(
    y: torch.Tensor,
    sigma: float | None,
    config: DIPConfig,
    generator: torch.Generator | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[DIPStep, None, DIPResult]:
    """Train a network on the centred noisy image ``y`` (C, H, W), step by step.

    Yields a :class:`DIPStep` per iterate (before the next update, so the
    caller can stop between iterations by closing the generator or through
    ``should_stop``) and returns a :class:`DIPResult`. Everything runs on
    ``y``'s device and dtype; the weights, the input noise and the SURE probe
    come from ``generator`` (a CPU ``torch.Generator``), so a seed gives a
    reproducible run.

    ``sigma`` is the noise standard deviation; it is required with
    ``n_iter='auto'``.
    """
    check_image(y, config)
    cfg = config
    auto = cfg.n_iter == "auto"
    if auto and sigma is None:
        raise ValueError("n_iter='auto' needs sigma (estimate it from the image)")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    should_stop = should_stop or (lambda: False)

    eps = probe = None
    if auto:
        spread = float(y.max() - y.min())
        eps = SURE_EPS * max(float(sigma), 1e-3 * spread, 1e-6)
    runs = _make_runs(y, cfg, gen, None)
    if auto:
        probe = torch.randn(y.shape, generator=gen, dtype=y.dtype).to(y.device)
        runs.append(_clone_run(runs[0], y + eps * probe, cfg))

    phases = []
    if cfg.optimizer in ("adam", "adam+gd"):
        a_iter = cfg.iter_cap if auto else int(cfg.n_iter)
        if cfg.optimizer == "adam+gd":
            a_iter = cfg.adapt_iter or (cfg.iter_cap if auto else DEFAULT_ADAPT_ITER)
        phases.append(("adam", a_iter))
    if cfg.optimizer in ("gd", "adam+gd"):
        phases.append(("gd", cfg.iter_cap if auto else int(cfg.n_iter)))
    # adam+gd with a fixed adapt_iter: no early stop in the Adam phase
    total = sum(n for _, n in phases) + len(phases)

    n_updates = 0
    result = None
    for p, (kind, n_steps) in enumerate(phases):
        last_phase = p == len(phases) - 1
        if kind == "adam":
            _set_optimizer(runs, "adam", _adam_lr(cfg))
        else:
            if p > 0:
                for run in runs:
                    run.reset_offset()
            _set_optimizer(runs, "gd", _gd_lr(cfg, runs[0], gen))
        select = auto and not (kind == "adam" and cfg.optimizer == "adam+gd" and cfg.adapt_iter)
        start = n_updates
        best = (math.inf, -1, None, None)  # sure, iteration, estimate, weights
        stopped = False
        z = None
        for k in range(n_steps + 1):
            if should_stop():
                stopped = True
                break
            grad = k < n_steps
            zs = [run.output(grad) for run in runs]
            z = zs[0].detach()
            loss = float(((y - z).double() ** 2).mean())
            if k == 0:
                first_loss = loss
            if not loss <= DIVERGED * max(first_loss, 1e-300):  # also catches NaN
                lr = runs[0].opt.param_groups[0]["lr"]
                raise FloatingPointError(
                    f"DIP training diverged at iteration {n_updates} ({kind}: loss {loss:.3g}, "
                    f"initially {first_loss:.3g}); pass a smaller lr than {lr:.3g}, or a "
                    "wider network"
                )
            sure = sure_value(y, z, zs[1].detach(), probe, sigma, eps) if auto else None
            yield DIPStep(n_updates, total, loss, sure, z, kind)
            if select and sure < best[0]:
                weights = [r.snapshot() for r in runs] if not last_phase else None
                best = (sure, n_updates, z.clone(), weights)
            if not grad:
                break
            if select:
                t_best = best[1] - start
                wait = cfg.patience if cfg.patience is not None else max(100, t_best)
                if k - t_best >= wait:
                    break
            for run, zk in zip(runs, zs, strict=True):
                run.update(zk)
            n_updates += 1
        if stopped:
            est, it, sc = (
                (best[2], best[1], best[0]) if best[2] is not None else (z, n_updates, None)
            )
            if est is None:
                est = runs[0].output(False).detach()
            return DIPResult(est, it, sc, n_updates, True)
        if not last_phase:
            if select and best[3] is not None:
                for run, w in zip(runs, best[3], strict=True):
                    run.restore(w)
            continue
        if select:
            result = DIPResult(best[2], best[1], best[0], n_updates, False)
        else:
            result = DIPResult(z, n_updates, sure, n_updates, False)
    return result


def _clone_run(run: _Run, target: torch.Tensor, cfg: DIPConfig) -> _Run:
    """A twin of ``run`` (same initial weights and input noise) fitted to ``target``."""
    model = _clone(run.model)
    if cfg.input == "image":
        x, crop = pad_to_multiple(target[None], model.multiple)
    else:
        x, crop = run.x, run.crop
    return _Run(target, model, x, crop, offset=cfg.input == "image")


class DIPTrainer:
    """A DIP training run that can be iterated and stopped from another thread.

    Parameters
    ----------
    y : Tensor, shape (C, H, W)
        Centred noisy image (subtract the middle of the value range, e.g. 0.5).
    sigma : float, optional
        Noise standard deviation; ``None`` estimates it
        (:func:`skimage.restoration.estimate_sigma`) when ``n_iter='auto'``.
    config : DIPConfig, optional
        Options; keyword arguments override its fields.
    seed : int, optional
        Seeds the weights, the input noise and the SURE probe.

    Examples
    --------
    >>> import torch
    >>> y = torch.rand(3, 16, 16) - 0.5
    >>> trainer = DIPTrainer(y, sigma=0.1, width=8, max_iter=5, seed=0)
    >>> for step in trainer:
    ...     if step.iteration == 2:
    ...         trainer.request_stop()
    >>> trainer.result.n_updates
    3
    """

    def __init__(
        self,
        y: torch.Tensor,
        sigma: float | None = None,
        config: DIPConfig | None = None,
        *,
        seed: int | None = None,
        **options: Any,
    ) -> None:
        cfg = replace(config or DIPConfig(), **options)
        check_image(y, cfg)
        if sigma is None and cfg.n_iter == "auto":
            sigma = estimate_sigma(y)
        self.y = y
        self.sigma = sigma
        self.config = cfg
        self.seed = seed
        self.result: DIPResult | None = None
        self._stop = False

    def request_stop(self) -> None:
        """Stop before the next iteration (thread-safe: sets a flag)."""
        self._stop = True

    def __iter__(self) -> Iterator[DIPStep]:
        seed = (
            self.seed
            if self.seed is not None
            else int(np.random.SeedSequence().generate_state(1)[0])
        )
        gen = torch.Generator().manual_seed(seed)
        self._stop = False
        # each step on a compute worker (one torch thread: nothing spin-waits
        # when other work shares the cores)
        self.result = yield from iter_in_pool(
            iter_dip(self.y, self.sigma, self.config, gen, should_stop=lambda: self._stop)
        )

    def run(self) -> torch.Tensor:
        """Train to the end and return the chosen estimate."""
        for _ in self:
            pass
        return self.result.estimate


def estimate_sigma(y: torch.Tensor) -> float:
    """Noise standard deviation of a ``(C, H, W)`` tensor (wavelet MAD, skimage)."""
    from skimage.restoration import estimate_sigma as _est

    arr = y.detach().cpu().double().numpy()
    with warnings.catch_warnings():  # a constant channel: NaN and "mean of empty slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        sigmas = [s for s in (_est(ch) for ch in arr) if np.isfinite(s)]
    return float(np.mean(sigmas)) if sigmas else 0.0


def iter_dip_plane(
    y: torch.Tensor, sigma: float, cfg: Any, rng: torch.Generator
) -> Generator[tuple[int, int], None, torch.Tensor]:
    """``denoise_ntd(method='dip')`` core: yields ``(done, total)``, returns ``(C, H, W)``.

    ``cfg`` is the ``NTDConfig``; its ``dip`` field holds the :class:`DIPConfig`
    and its ``n_iter`` / ``patch_size`` override the DIP ones.
    """
    dip = cfg.dip if getattr(cfg, "dip", None) is not None else DIPConfig()
    dip = replace(dip, n_iter=cfg.n_iter, patch_size=cfg.patch_size)
    gen = iter_dip(y, sigma, dip, rng)
    count = 0
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value.estimate.to(device=y.device, dtype=y.dtype)
        count += 1
        yield (min(count, step.total), step.total)
