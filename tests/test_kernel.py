"""The closed-form kernel against independent references.

* the empirical NTK ``J J^T`` of a finite torch network (``torch.func``),
  which must approach the closed form as the width grows;
* the arc-cosine maps of eqs. (35) and (49) written out in numpy;
* the patch layout against explicit slicing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from napari_ntd._ntk._kernel import exact_kernel, patch_matrix, patch_sq_norms


class FiniteCNN(torch.nn.Module):
    """Appendix H.1 in the NTK parametrisation: weights N(0, 1), He scaling in forward."""

    def __init__(self, channels_in: int, width: int, r: int, generator: torch.Generator):
        super().__init__()
        self.r = r
        self.n0 = channels_in * r * r
        self.width = width
        kw = dict(generator=generator, dtype=torch.float64)
        self.conv1 = torch.nn.Parameter(torch.randn(width, channels_in, r, r, **kw))
        self.conv2 = torch.nn.Parameter(torch.randn(1, width, 1, 1, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.nn.functional.conv2d(x[None], self.conv1, padding=self.r // 2)
        a = a * math.sqrt(2.0 / self.n0)
        z = torch.nn.functional.conv2d(torch.relu(a), self.conv2) * math.sqrt(2.0 / self.width)
        return z.reshape(-1)


def empirical_ntk(x: torch.Tensor, width: int, r: int, seed: int) -> torch.Tensor:
    net = FiniteCNN(x.shape[0], width, r, torch.Generator().manual_seed(seed))
    params = {k: v.detach() for k, v in net.named_parameters()}
    jac = jacrev(lambda p: functional_call(net, p, (x,)))(params)
    flat = torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1)
    return flat @ flat.T


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


@pytest.mark.parametrize("channels", [1, 3])
def test_closed_form_matches_empirical_ntk(channels):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(channels, 8, 8, generator=gen, dtype=torch.float64) - 0.5
    r = 3
    theory = exact_kernel(x, r)
    errors = {w: _rel(empirical_ntk(x, w, r, seed=1), theory) for w in (16, 128, 1024)}
    assert errors[1024] < 0.1, errors
    assert errors[16] > errors[128] > errors[1024], errors


def test_last_layer_term_alone_is_not_the_ntk():
    """Eq. (14) (the last-layer term) is visibly different from the full NTK."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(1, 8, 8, generator=gen, dtype=torch.float64) - 0.5
    p = patch_matrix(x, 3)
    n = p.norm(dim=1)
    cos = ((p @ p.T) / torch.outer(n, n)).clamp(-1, 1)
    phi = torch.arccos(cos)
    eq14 = (2 / 9) * torch.outer(n, n) / math.pi * (torch.sin(phi) + (math.pi - phi) * cos)
    assert _rel(eq14, exact_kernel(x, 3)) > 0.3


def test_kernel_equals_arccos_maps_in_numpy():
    """Theta = V(S) + V'(S) o S with eqs. (35), (49), S = (2/n0) P P^T."""
    rng = np.random.default_rng(5)
    x = rng.random((2, 7, 9)) - 0.4
    r = 5
    # explicit zero-padded patches, channel-major
    pad = np.pad(x, ((0, 0), (r // 2, r // 2), (r // 2, r // 2)))
    patches = np.stack([pad[:, i : i + r, j : j + r].ravel() for i in range(7) for j in range(9)])
    s = (2.0 / patches.shape[1]) * patches @ patches.T
    diag = np.sqrt(np.diag(s))
    cos = np.clip(s / np.outer(diag, diag), -1, 1)
    phi = np.arccos(cos)
    v = np.outer(diag, diag) / np.pi * (np.sin(phi) + (np.pi - phi) * np.cos(phi))
    v_prime = 1 - phi / np.pi
    expected = v + v_prime * s
    got = exact_kernel(torch.from_numpy(x), r).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-12)  # arccos near 1
    np.testing.assert_allclose(
        patch_matrix(torch.from_numpy(x), r).numpy(), patches, rtol=0, atol=0
    )
    np.testing.assert_allclose(
        patch_sq_norms(torch.from_numpy(x), r).numpy(), (patches**2).sum(1), rtol=1e-12
    )


def test_kernel_is_psd_and_float32_close_to_float64():
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(1, 12, 12, generator=gen, dtype=torch.float64) - 0.5
    k64 = exact_kernel(x, 5)
    k32 = exact_kernel(x.float(), 5).double()
    assert torch.linalg.eigvalsh(k64).min() > -1e-10 * k64.diagonal().max()
    assert _rel(k32, k64) < 1e-4  # arccos(cos ~ 1) in float32
