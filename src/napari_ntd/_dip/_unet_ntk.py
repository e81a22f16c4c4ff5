"""The exact (infinite-width) NTK of the Table-3 U-Net, by the recursion of eq. (9).

Every feature map ``h`` of a network with ``c -> inf`` channels is described
by two ``d x d`` matrices (the same for every channel): its covariance
``K = E[h h^T]`` (forward propagation, appendix B) and its tangent kernel
``T = sum_w dh/dw (dh/dw)^T`` (appendix D). In the NTK parametrisation with
He gain ``g = 2`` each layer maps ``(K, T)`` as follows:

* ``r x r`` convolution (zero padding)::

      K' = g / r^2 * A_r(K)          T' = g / r^2 * A_r(K + T)

  with ``[A_r(S)]_{ij} = sum_delta S_{i + delta, j + delta}`` (eq. 11; the
  same offset ``delta`` in both patches because one weight multiplies both);
  the first term of ``T'`` is the layer's own weights, the second the earlier
  ones. The input image enters as ``K = (1/C) sum_c x_c x_c^T``, ``T = 0``
  (eq. 65).
* ReLU (eqs. 35 and 49, without the gain that the conv carries)::

      K' = sqrt(K_ii K_jj) / (2 pi) (sin phi + (pi - phi) cos phi)
      T' = (pi - phi) / (2 pi) * T

* bilinear down/upsampling by a fixed matrix ``D`` (appendix F)::

      K' = D K D^T                   T' = D T D^T

The output tangent kernel is ``Theta`` of eq. (8); it equals the empirical
``J J^T`` of a wide U-Net in the NTK parametrisation (``_networks.UNet(...,
parametrization="ntk")``). For the vanilla CNN the same maps reproduce
``_kernel.exact_kernel``. Dense ``d x d`` matrices: small images only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._networks import GAIN, UNET_MULTIPLE, down2, up2

__all__ = ["conv_map", "relu_map", "resample_matrix", "unet_ntk", "vanilla_ntk"]


def conv_map(s: torch.Tensor, shape: tuple[int, int], r: int) -> torch.Tensor:
    """``g / r^2 * A_r(S)`` for a ``d x d`` matrix over an ``(h, w)`` grid."""
    h, w = shape
    p = r // 2
    s4 = torch.nn.functional.pad(s.reshape(h, w, h, w), (p, p, p, p, p, p, p, p))
    out = torch.zeros((h, w, h, w), dtype=s.dtype, device=s.device)
    for a in range(r):
        for b in range(r):
            out += s4[a : a + h, b : b + w, a : a + h, b : b + w]
    return out.reshape(h * w, h * w) * (GAIN / (r * r))


def relu_map(k: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[relu(h) relu(h)^T], E[relu'(h) relu'(h)^T] * T)`` for ``h ~ N(0, K)``."""
    diag = torch.sqrt(torch.diagonal(k).clamp_min(0.0))
    norm = torch.outer(diag, diag)
    cos = (k / norm.clamp_min(torch.finfo(k.dtype).tiny)).clamp(-1.0, 1.0)
    phi = torch.arccos(cos)
    sin = torch.sqrt((1.0 - cos * cos).clamp_min(0.0))
    k_out = norm / (2 * math.pi) * (sin + (math.pi - phi) * cos)
    t_out = (math.pi - phi) / (2 * math.pi) * t
    return k_out, t_out


def resample_matrix(
    shape: tuple[int, int], fn: Callable[[torch.Tensor], torch.Tensor], dtype=torch.float64
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Dense matrix of a linear image map (``down2``/``up2``) and its output shape."""
    h, w = shape
    eye = torch.eye(h * w, dtype=dtype).reshape(h * w, 1, h, w)
    out = fn(eye)  # (d_in, 1, h', w'): column j is the image of e_j
    return out.reshape(h * w, -1).T.contiguous(), tuple(out.shape[-2:])


def _linear(k, t, mat):
    return mat @ k @ mat.T, mat @ t @ mat.T


def _input_gram(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    return flat.T @ flat / x.shape[0]


def vanilla_ntk(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """NTK of the vanilla CNN by the same maps (equals ``_kernel.exact_kernel``)."""
    shape = tuple(x.shape[-2:])
    k = conv_map(_input_gram(x), shape, patch_size)
    t = k.clone()
    k, t = relu_map(k, t)
    return conv_map(k + t, shape, 1)


def unet_ntk(x: torch.Tensor, *, return_gp: bool = False):
    """Infinite-width NTK ``Theta`` (``d x d``) of the Table-3 U-Net on a ``(C, H, W)`` input.

    ``H`` and ``W`` must be multiples of 8. With ``return_gp`` also returns the
    output covariance ``Sigma_z`` of the network at initialisation (eq. 37).
    """
    h, w = x.shape[-2:]
    if h % UNET_MULTIPLE or w % UNET_MULTIPLE:
        raise ValueError(f"image sides must be multiples of {UNET_MULTIPLE}, got {h} x {w}")
    shape = (h, w)
    k = conv_map(_input_gram(x), shape, 3)  # convd1
    t = k.clone()
    for level in range(4):
        if level > 0:  # convd2..convd4
            k, t = conv_map(k, shape, 3), conv_map(k + t, shape, 3)
        k, t = relu_map(k, t)
        if level < 3:
            mat, shape = resample_matrix(shape, down2, x.dtype)
            k, t = _linear(k, t, mat.to(x.device))
    k, t = conv_map(k, shape, 3), conv_map(k + t, shape, 3)  # conv4 (no ReLU)
    for _ in range(3):  # up, convu, relu
        mat, shape = resample_matrix(shape, up2, x.dtype)
        k, t = _linear(k, t, mat.to(x.device))
        k, t = conv_map(k, shape, 3), conv_map(k + t, shape, 3)
        k, t = relu_map(k, t)
    k, t = conv_map(k, shape, 1), conv_map(k + t, shape, 1)  # convu4
    return (t, k) if return_gp else t
