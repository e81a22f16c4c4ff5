"""Closed-form U-Net NTK (eq. 9 with the maps of appendix F) vs finite networks."""

from __future__ import annotations

import pytest
import torch

from napari_ntd._kernel import exact_kernel
from napari_ntd._networks import UNet, down2, empirical_ntk, up2
from napari_ntd._unet_ntk import resample_matrix, unet_ntk, vanilla_ntk


def _x(shape=(2, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) - 0.5


def test_vanilla_recursion_equals_closed_form_kernel():
    x = _x((3, 9, 10))
    torch.testing.assert_close(vanilla_ntk(x, 5), exact_kernel(x, 5), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("fn", [down2, up2])
def test_resample_matrix_is_the_layer(fn):
    img = _x((1, 8, 8), seed=1)
    mat, shape = resample_matrix((8, 8), fn)
    out = fn(img[None])[0, 0]
    assert tuple(out.shape) == shape
    torch.testing.assert_close(mat @ img.reshape(-1), out.reshape(-1))


def test_unet_ntk_is_symmetric_psd_and_checks_size():
    theta, gp = unet_ntk(_x((1, 16, 8)), return_gp=True)
    assert theta.shape == (128, 128)
    torch.testing.assert_close(theta, theta.T)
    assert float(torch.linalg.eigvalsh(theta)[0]) > -1e-10 * float(theta.diagonal().max())
    # the tangent kernel dominates the covariance it contains (T = K + ...)
    assert float((theta - gp).diagonal().min()) > 0
    with pytest.raises(ValueError, match="multiples of 8"):
        unet_ntk(_x((1, 12, 8)))


@pytest.mark.slow
def test_unet_ntk_matches_wide_finite_network():
    x = _x()
    cols = [0, 9, 27, 36, 50, 63]
    theta, gp = unet_ntk(x, return_gp=True)
    net = UNet(
        2,
        1,
        512,
        parametrization="ntk",
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    emp = empirical_ntk(net, x[None], columns=cols)

    def rel(a):
        return float((emp - a).norm() / a.norm())

    # finite-width fluctuations are O(c^-1/2) per layer: ~0.13 at c = 512 (0.3-1.4 at c = 32)
    assert rel(theta[:, cols]) < 0.2
    assert rel(gp[:, cols]) > 1.0
