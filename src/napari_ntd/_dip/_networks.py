"""Stage 4: the networks of appendix H, as plain functions and parameter holders.

Two bias-free ReLU CNNs, both He-initialised (``sigma_w^2 = 2``):

* the vanilla CNN of appendix H.1 (table 2): ``r x r`` conv to ``c`` channels,
  ReLU, ``1 x 1`` conv;
* the U-Net of appendix H.2 (table 3): ``3 x 3`` convs with three bilinear
  down- and up-sampling stages and no skip connections.

Each comes in two parametrisations. ``"standard"``: weights drawn from
``N(0, 2 / fan_in)`` and used as they are (the paper's setting, trained with a
learning rate ``O(1 / c)``). ``"ntk"``: weights drawn from ``N(0, 1)`` and each
convolution multiplied by ``sqrt(2 / fan_in)`` in the forward pass; gradient
descent with a learning rate ``O(1)`` then follows the infinite-width NTK
including the first-layer term (``_kernel`` and ``_unet_ntk``). Both give the
same function at initialisation.

The forward passes are plain functions of ``(x, weights, scales)`` so that
``torch.func`` can differentiate them with respect to the weights; the
``nn.Module`` classes only hold the weights and call them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "PARAMETRIZATIONS",
    "UNET_MULTIPLE",
    "VanillaCNN",
    "UNet",
    "make_network",
    "vanilla_forward",
    "unet_forward",
    "down2",
    "up2",
    "pad_to_multiple",
    "ntk_matvec",
    "empirical_ntk",
    "ntk_top_eigenvalue",
]

ARCHITECTURES = ("unet", "vanilla")
PARAMETRIZATIONS = ("standard", "ntk")

#: He gain of the ReLU networks (``sigma_w^2``).
GAIN = 2.0

#: The U-Net halves the image three times: its input side must be a multiple of 8.
UNET_MULTIPLE = 8


def down2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear downsampling by 2 (appendix F, ``D``); even sizes: 2 x 2 averages."""
    return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)


def up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear upsampling by 2 (appendix F, ``U``)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _conv(x: torch.Tensor, w: torch.Tensor, scale: float) -> torch.Tensor:
    out = F.conv2d(x, w, padding=w.shape[-1] // 2)
    return out if scale == 1.0 else out * scale


def vanilla_forward(
    x: torch.Tensor, weights: Sequence[torch.Tensor], scales: Sequence[float]
) -> torch.Tensor:
    """Vanilla CNN (table 2): ``conv_r -> ReLU -> conv_1x1`` on ``(N, C, H, W)``."""
    w1, w2 = weights
    return _conv(torch.relu(_conv(x, w1, scales[0])), w2, scales[1])


def unet_forward(
    x: torch.Tensor, weights: Sequence[torch.Tensor], scales: Sequence[float]
) -> torch.Tensor:
    """U-Net of table 3 (no skips) on ``(N, C, H, W)`` with ``H, W`` multiples of 8.

    ``weights`` are, in order: convd1..convd4, conv4, convu1..convu3, convu4.
    """
    h = x
    for k in range(4):  # convd_k, relu_k, down_k (no down after convd4)
        h = torch.relu(_conv(h, weights[k], scales[k]))
        if k < 3:
            h = down2(h)
    h = _conv(h, weights[4], scales[4])  # conv4: no ReLU before up1
    for k in range(5, 8):  # up, convu, relu
        h = torch.relu(_conv(up2(h), weights[k], scales[k]))
    return _conv(h, weights[8], scales[8])  # convu4, 1 x 1


def _init_weights(
    shapes: Sequence[tuple[int, ...]],
    parametrization: str,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> tuple[list[nn.Parameter], list[float]]:
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"unknown parametrization {parametrization!r}; expected one of {PARAMETRIZATIONS}"
        )
    params, scales = [], []
    for shape in shapes:
        fan_in = shape[1] * shape[2] * shape[3]
        he = math.sqrt(GAIN / fan_in)
        # drawn on the CPU from the (CPU) generator: same weights on every device
        w = torch.randn(shape, generator=generator, dtype=dtype)
        if parametrization == "standard":
            w, s = w * he, 1.0
        else:
            s = he
        params.append(nn.Parameter(w.to(device)))
        scales.append(s)
    return params, scales


def _check_width(width: int, in_channels: int, out_channels: int) -> None:
    for name, val in (
        ("width", width),
        ("in_channels", in_channels),
        ("out_channels", out_channels),
    ):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")


class VanillaCNN(nn.Module):
    """One-hidden-layer ReLU CNN of appendix H.1 (paper: ``width=512``, ``patch_size=11``).

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels at the input and the output.
    width : int
        Hidden channels ``c``.
    patch_size : int
        Side ``r`` of the first convolution (odd); zero padding keeps the size.
    parametrization : {'standard', 'ntk'}
        See the module docstring.
    generator : torch.Generator, optional
        CPU generator for the He initialisation (reproducible weights).
    dtype, device
        Of the weights.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        *,
        patch_size: int = 11,
        parametrization: str = "standard",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_width(width, in_channels, out_channels)
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive odd int, got {patch_size!r}")
        if patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd, got {patch_size}")
        shapes = [(width, in_channels, patch_size, patch_size), (out_channels, width, 1, 1)]
        params, self.scales = _init_weights(shapes, parametrization, generator, dtype, device)
        self.weights = nn.ParameterList(params)
        self.parametrization = parametrization
        self.multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return vanilla_forward(x, list(self.weights), self.scales)


class UNet(nn.Module):
    """U-Net of appendix H.2 without skip connections (paper: ``width=128``).

    Nine bias-free convolutions (eight ``3 x 3``, one ``1 x 1`` output), three
    bilinear down/up stages. The input side must be a multiple of
    :data:`UNET_MULTIPLE`; trainers pad and crop (:func:`pad_to_multiple`).
    Parameters as for :class:`VanillaCNN`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        *,
        parametrization: str = "standard",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_width(width, in_channels, out_channels)
        c = width
        shapes = [(c, in_channels, 3, 3)] + [(c, c, 3, 3)] * 7 + [(out_channels, c, 1, 1)]
        params, self.scales = _init_weights(shapes, parametrization, generator, dtype, device)
        self.weights = nn.ParameterList(params)
        self.parametrization = parametrization
        self.multiple = UNET_MULTIPLE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % UNET_MULTIPLE or w % UNET_MULTIPLE:
            raise ValueError(
                f"UNet input must have sides that are multiples of {UNET_MULTIPLE}, got "
                f"{h} x {w}; pad it (pad_to_multiple) and crop the output"
            )
        return unet_forward(x, list(self.weights), self.scales)


def make_network(
    architecture: str,
    in_channels: int,
    out_channels: int,
    width: int,
    *,
    patch_size: int = 11,
    parametrization: str = "standard",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> VanillaCNN | UNet:
    """Build ``"unet"`` or ``"vanilla"`` (``patch_size`` only applies to the vanilla CNN)."""
    kw = dict(parametrization=parametrization, generator=generator, dtype=dtype, device=device)
    if architecture == "vanilla":
        return VanillaCNN(in_channels, out_channels, width, patch_size=patch_size, **kw)
    if architecture == "unet":
        return UNet(in_channels, out_channels, width, **kw)
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Pad the last two axes to multiples of ``multiple`` (reflect, else replicate).

    Returns the padded tensor and the ``(rows, cols)`` slices that crop it back.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    top, left = ph // 2, pw // 2
    crop = (slice(top, top + h), slice(left, left + w))
    if ph == 0 and pw == 0:
        return x, crop
    pad = (left, pw - left, top, ph - top)
    mode = "reflect" if max(pad[0], pad[1]) < w and max(pad[2], pad[3]) < h else "replicate"
    batched = x if x.ndim == 4 else x[None]
    out = F.pad(batched, pad, mode=mode)
    return (out if x.ndim == 4 else out[0]), crop


def ntk_matvec(model: VanillaCNN | UNet, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Empirical tangent kernel times a vector: ``J J^T v`` with ``J = dz/dw``.

    ``x`` is the network input ``(1, C, H, W)`` and ``v`` has the shape of the
    output. One reverse (``J^T v``) and one forward-mode (``J u``) pass.
    """
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach() for p in model.parameters())

    def f(*ws):
        return torch.func.functional_call(model, dict(zip(names, ws, strict=True)), (x,))

    _, pullback = torch.func.vjp(f, *params)
    u = pullback(v)
    _, out = torch.func.jvp(f, params, u)
    return out


def empirical_ntk(
    model: VanillaCNN | UNet,
    x: torch.Tensor,
    channel: int = 0,
    columns: Sequence[int] | None = None,
) -> torch.Tensor:
    """Columns of the empirical NTK ``J J^T`` of output ``channel`` (small images only).

    Returns ``(d, len(columns))`` (all ``d`` columns by default).
    """
    with torch.no_grad():
        shape = model(x).shape
    d = shape[-2] * shape[-1]
    cols = []
    for i in range(d) if columns is None else columns:
        e = torch.zeros(shape, dtype=x.dtype, device=x.device)
        e[0, channel].view(-1)[i] = 1.0
        cols.append(ntk_matvec(model, x, e)[0, channel].reshape(-1))
    return torch.stack(cols, 1)


def ntk_top_eigenvalue(
    model: VanillaCNN | UNet,
    x: torch.Tensor,
    *,
    crop: tuple[slice, slice] | None = None,
    n_iter: int = 20,
    generator: torch.Generator | None = None,
) -> float:
    """Largest eigenvalue of ``J J^T`` by power iteration (on the cropped output).

    With the loss ``1/2 ||z - y||^2``, gradient descent is stable for learning
    rates below ``2 / lambda_max``; ``1 / lambda_max`` makes it the twicing of
    eq. (5) with ``W = Theta / lambda_max`` (the ``denoise_ntd`` filter).
    """
    with torch.no_grad():
        shape = model(x).shape
    crop = crop or (slice(None), slice(None))
    mask = torch.zeros(shape, dtype=x.dtype, device=x.device)
    mask[..., crop[0], crop[1]] = 1.0
    v = torch.randn(shape, generator=generator, dtype=x.dtype).to(x.device) * mask
    lam = 0.0
    for _ in range(n_iter):
        v = v / v.norm()
        w = ntk_matvec(model, x, v) * mask
        lam = float((v * w).sum())
        v = w
    return lam
