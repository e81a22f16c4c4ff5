"""Stage 3: twicing in the eigenbasis, and choosing when to stop.

Twicing (eq. 5/7) from ``z^0 = 0`` with a filter ``W = V diag(lambda) V^T``::

    z^{t+1} = z^t + W (y - z^t)   =>   z^t = V diag(1 - (1 - lambda)^t) V^T y

so every ``t`` is available in closed form from the projections ``V^T y``.

Monte-Carlo SURE (Ramani, Blu & Unser 2008) estimates the mean squared error
of ``z^t`` without the clean image::

    SURE(t) = ||y - z^t(y)||^2 / d - sigma^2 + 2 sigma^2 div_t / d
    div_t  ~= b^T (z^t(y + eps b) - z^t(y)) / eps,     b ~ N(0, I)

The filter depends on ``y``, so the perturbed run recomputes the basis from
``y + eps b`` (same columns); then ``div_t`` follows for every ``t`` at once
from a few ``k``-vectors. All the small reductions run in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._nystrom import Basis

__all__ = ["gains", "t_grid", "Projections", "project", "apply", "residual_curve", "sure_curve"]

#: Largest number of twicing iterations considered by the automatic rule.
T_MAX = 100_000


def t_grid(t_max: int = T_MAX) -> np.ndarray:
    """Candidate iteration counts: every integer up to 64, then ~3% steps."""
    dense = np.arange(1, 65)
    sparse = np.unique(np.round(np.geomspace(64, t_max, 400)).astype(np.int64))
    return np.unique(np.concatenate([dense, sparse]))


def gains(values: torch.Tensor, t) -> torch.Tensor:
    """Twicing gains ``1 - (1 - lambda)^t`` for each ``t`` (rows) and eigenvalue.

    ``values`` (..., k) gives (..., T, k). ``t = 0`` gives 0 for every
    ``lambda`` (``0^0 = 1``, also at ``lambda = 1``).
    """
    lam = values.double().clamp(0.0, 1.0)
    t = torch.as_tensor(np.atleast_1d(t), dtype=torch.float64, device=lam.device)
    # (1 - lam)^t via exp(t log1p(-lam)), accurate for small lam; lam == 1 gives
    # exp(-inf) = 0 for t > 0, but 0 * -inf = NaN at t == 0, whose gain is 0
    g = -torch.expm1(t[:, None] * torch.log1p(-lam)[..., None, :])
    return torch.where(t[:, None] == 0, torch.zeros_like(g), g)


@dataclass(frozen=True)
class Projections:
    """float64 inner products of the basis with the data (channels first).

    ``coef = V^T y`` (C, k); ``gram = V^T V`` (k, k); ``probe = V^T b`` (C, k)
    when a probe ``b`` is given.
    """

    coef: torch.Tensor
    gram: torch.Tensor
    probe: torch.Tensor | None = None


def project(
    basis: Basis, y: torch.Tensor, probe: torch.Tensor | None = None, block: int = 65536
) -> Projections:
    """Projections of ``y`` (C, d) (and ``probe``) on the basis, in float64."""
    v = basis.vectors
    k = v.shape[1]
    c = y.shape[0]
    coef = torch.zeros((c, k), dtype=torch.float64, device=v.device)
    gram = torch.zeros((k, k), dtype=torch.float64, device=v.device)
    prb = None if probe is None else torch.zeros_like(coef)
    for i0 in range(0, v.shape[0], block):
        vb = v[i0 : i0 + block].double()
        coef += y[:, i0 : i0 + block].double() @ vb
        gram += vb.T @ vb
        if prb is not None:
            prb += probe[:, i0 : i0 + block].double() @ vb
    return Projections(coef=coef, gram=gram, probe=prb)


def apply(basis: Basis, proj: Projections, t: np.ndarray) -> torch.Tensor:
    """Twicing output ``z^t`` (C, d) for one ``t`` per channel."""
    g = torch.stack([gains(basis.values, int(tc))[0] for tc in np.atleast_1d(t)])
    weights = (g * proj.coef).to(basis.vectors.dtype)  # (C, k)
    return weights @ basis.vectors.T


def residual_curve(
    basis: Basis, proj: Projections, sq_norm: torch.Tensor, ts: np.ndarray
) -> torch.Tensor:
    """``||u_c - z_c^t||^2`` for each channel ``c`` and each ``t`` in ``ts``.

    ``proj.coef`` holds ``V^T y`` (the data being filtered); ``sq_norm`` and
    the cross term use ``u``: pass ``proj_u`` with ``coef = V^T u`` via
    :func:`error_curve` for a reference image, or ``u = y`` here.
    """
    return error_curve(basis, proj, proj.coef, sq_norm, ts)


def error_curve(
    basis: Basis,
    proj: Projections,
    ref_coef: torch.Tensor,
    ref_sq_norm: torch.Tensor,
    ts: np.ndarray,
) -> torch.Tensor:
    """``||u_c - z_c^t||^2`` (C, T) where ``z^t`` filters ``y`` and ``V^T u = ref_coef``."""
    g = gains(basis.values, ts)  # (T, k)
    out = []
    for ch in range(proj.coef.shape[0]):
        a = g * proj.coef[ch]  # (T, k) coefficients of z^t
        quad = ((a @ proj.gram) * a).sum(1)
        cross = a @ ref_coef[ch]
        out.append(ref_sq_norm[ch] - 2.0 * cross + quad)
    return torch.stack(out)


def sure_curve(
    basis: Basis,
    proj: Projections,
    values_eps: torch.Tensor,
    proj_eps: Projections,
    y_sq_norm: torch.Tensor,
    sigma: float,
    eps: float,
    ts: np.ndarray,
) -> torch.Tensor:
    """Monte-Carlo SURE estimate of the per-pixel MSE (C, T) of ``z^t``."""
    d = basis.vectors.shape[0]
    res = residual_curve(basis, proj, y_sq_norm, ts)
    g = gains(basis.values, ts)
    g_eps = gains(values_eps, ts)
    b_z = g @ (proj.probe * proj.coef).T  # (T, C): b^T z^t(y)
    b_z_eps = g_eps @ (proj_eps.probe * proj_eps.coef).T  # b^T z^t(y + eps b)
    div = ((b_z_eps - b_z) / eps).T
    return res / d - sigma**2 + 2.0 * sigma**2 * div / d
