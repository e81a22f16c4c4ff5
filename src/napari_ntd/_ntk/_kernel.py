"""Stage 1: image patches and the neural tangent kernel evaluated on them.

This is where a pixel's patch becomes a kernel column.

The network is the vanilla CNN of appendix H.1 of the paper: an ``r x r``
convolution with ``c`` channels, a ReLU, and a ``1 x 1`` convolution, no
biases, He initialisation (``sigma_w^2 = 2``), zero ("same") padding at the
image border. In the NTK parametrisation and the limit ``c -> inf`` the
tangent kernel between the outputs at pixels ``i`` and ``j`` follows the
recursion of eq. (9) with two layers::

    S(p, q)     = (2 / n0) <p, q>                       (first conv, eq. 10)
    Theta(p, q) = V(S)(p, q) + V'(S)(p, q) * S(p, q)    (eq. 9, 1x1 conv: A = id)

where ``p``, ``q`` are the ``n0 = channels * r * r`` values of the zero-padded
patches centred at ``i`` and ``j``; ``V`` and ``V'`` are the ReLU arc-cosine
maps of eqs. (35) and (49). With ``s = sqrt(S(p, p) S(q, q))``,
``cos(phi) = S(p, q) / s``::

    Theta(p, q) = s / pi * (sin(phi) + 2 (pi - phi) cos(phi))

The first term is the last-layer kernel, eq. (14); the second is the
contribution of the first-layer weights. Both belong to the limit in the NTK
parametrisation, where every layer's gradient counts alike (eq. 9 from the
base case of eq. 10). In the standard parametrisation (the paper's He
initialisation, trained with a learning rate ``O(1/c)``; the default of the
DIP networks, :mod:`napari_ntd._networks`) the first-layer term is ``O(n0 / c)``
of the last-layer one and vanishes: eq. (14) alone is that limit.

Speed: float32 blocks on the CPU go through a fused compiled loop
(:mod:`napari_ntd._fast_kernel`, numba) when it is available;
:func:`ntk_from_gram_reference` is the eager torch computation used otherwise
(float64, CUDA, no numba) and by the tests as the reference. Set
:data:`FAST_KERNEL` to ``False`` (or the environment variable
``NAPARI_NTD_FAST_KERNEL=0`` before import) to always use the reference.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

__all__ = [
    "FAST_KERNEL",
    "exact_kernel",
    "ntk_block",
    "ntk_from_gram",
    "ntk_from_gram_reference",
    "patch_matrix",
    "patch_sq_norms",
]

#: Use the compiled CPU kernel for float32 blocks when available (see module doc).
FAST_KERNEL: bool = os.environ.get("NAPARI_NTD_FAST_KERNEL", "1").strip().lower() not in (
    "0",
    "false",
    "no",
    "off",
)


def patch_matrix(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """All zero-padded ``r x r`` patches of a ``(C, H, W)`` image.

    Returns a ``(H * W, C * r * r)`` tensor; row ``i`` is the patch centred at
    pixel ``i`` (row-major order), channel-major inside the patch, which is the
    receptive field of the first convolution of the network.
    """
    c, h, w = x.shape
    r = patch_size
    cols = F.unfold(x[None], kernel_size=r, padding=r // 2)  # (1, C*r*r, H*W)
    return cols[0].T.reshape(h * w, c * r * r)


def patch_sq_norms(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Squared Euclidean norm of every zero-padded patch, shape ``(H * W,)``.

    Computed as a box filter of ``x**2`` summed over channels, without
    materialising the patches.
    """
    r = patch_size
    sq = (x * x).sum(0, keepdim=True)[None]  # (1, 1, H, W)
    ones = torch.ones((1, 1, r, r), dtype=x.dtype, device=x.device)
    return F.conv2d(sq, ones, padding=r // 2).reshape(-1)


def ntk_from_gram(
    gram: torch.Tensor,
    sq_a: torch.Tensor,
    sq_b: torch.Tensor,
    n0: int,
    *,
    fast: bool | None = None,
) -> torch.Tensor:
    """Infinite-width NTK from patch inner products.

    Parameters
    ----------
    gram : Tensor, shape (a, b)
        Inner products ``<p_i, q_j>`` of raw patches.
    sq_a, sq_b : Tensor, shapes (a,), (b,)
        Squared norms of the patches on each side.
    n0 : int
        Fan-in of the first convolution (``channels * r * r``).
    fast : bool, optional
        Use the compiled CPU kernel when it applies (float32, CPU, contiguous,
        numba installed); default :data:`FAST_KERNEL`. Otherwise, and always
        for float64 or CUDA tensors, :func:`ntk_from_gram_reference`.

    Returns
    -------
    Tensor, shape (a, b)
        ``Theta(p_i, q_j)``; computed in place in ``gram``'s storage when
        possible, so callers must not reuse ``gram``.
    """
    if FAST_KERNEL if fast is None else fast:
        from . import _fast_kernel

        if _fast_kernel.supports(gram):
            return _fast_kernel.ntk_from_gram_fast(gram, sq_a, sq_b, n0)
    return ntk_from_gram_reference(gram, sq_a, sq_b, n0)


def ntk_from_gram_reference(
    gram: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor, n0: int
) -> torch.Tensor:
    """:func:`ntk_from_gram` in eager torch (any dtype and device), in place in ``gram``."""
    scale = 2.0 / n0
    s = torch.sqrt(torch.outer(sq_a, sq_b)).mul_(scale)  # sqrt(S(p,p) S(q,q))
    cos = gram.mul_(scale).div_(s.clamp_min(torch.finfo(gram.dtype).tiny))
    cos.clamp_(-1.0, 1.0)
    phi = torch.arccos(cos)
    sin = torch.sqrt((1.0 - cos * cos).clamp_min_(0.0))
    # sin + 2 (pi - phi) cos, then times s / pi
    out = phi.neg_().add_(math.pi).mul_(cos).mul_(2.0).add_(sin)
    return out.mul_(s).div_(math.pi)


def ntk_block(
    rows: torch.Tensor,
    cols: torch.Tensor,
    sq_rows: torch.Tensor,
    sq_cols: torch.Tensor,
    *,
    fast: bool | None = None,
) -> torch.Tensor:
    """Kernel block between two sets of patches (rows of ``rows`` and ``cols``).

    One matrix product for the inner products, then :func:`ntk_from_gram` in
    its storage (no other ``a x b`` temporary on the fast path).
    """
    return ntk_from_gram(rows @ cols.T, sq_rows, sq_cols, rows.shape[1], fast=fast)


def exact_kernel(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The full ``d x d`` NTK matrix of a ``(C, H, W)`` image (small images only)."""
    p = patch_matrix(x, patch_size)
    sq = (p * p).sum(1)
    return ntk_block(p, p, sq, sq)
