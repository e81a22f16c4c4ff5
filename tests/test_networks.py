"""Networks of appendix H: shapes, parametrisations, tangent-kernel helpers."""

from __future__ import annotations

import pytest
import torch

from napari_ntd._dip._networks import (
    UNet,
    VanillaCNN,
    empirical_ntk,
    make_network,
    ntk_matvec,
    ntk_top_eigenvalue,
    pad_to_multiple,
)
from napari_ntd._util._parallel import torch_threads


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_paper_weight_counts():
    # appendix H: 187,392 (vanilla, c = 512) and 1,036,032 (U-Net, c = 128) weights
    van = VanillaCNN(3, 3, 512, patch_size=11, generator=_gen())
    unet = UNet(3, 3, 128, generator=_gen())
    assert sum(p.numel() for p in van.parameters()) == 187_392
    assert sum(p.numel() for p in unet.parameters()) == 1_036_032


@pytest.mark.parametrize("arch", ["vanilla", "unet"])
@pytest.mark.parametrize("shape", [(13, 21), (16, 16), (9, 30)])
def test_any_size_via_padding(arch, shape):
    net = make_network(arch, 3, 3, 8, patch_size=5, generator=_gen())
    x = torch.randn(1, 3, *shape, generator=_gen(1))
    xp, crop = pad_to_multiple(x, net.multiple)
    assert xp.shape[-2] % net.multiple == 0 and xp.shape[-1] % net.multiple == 0
    torch.testing.assert_close(xp[..., crop[0], crop[1]], x)
    out = net(xp)[..., crop[0], crop[1]]
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_unet_rejects_unpadded_input():
    net = UNet(1, 1, 4, generator=_gen())
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 1, 12, 16))


@pytest.mark.parametrize("arch", ["vanilla", "unet"])
def test_standard_and_ntk_parametrisations_agree_at_init(arch):
    x = torch.randn(1, 2, 16, 16, generator=_gen(3), dtype=torch.float64)
    kw = dict(patch_size=5, dtype=torch.float64)
    std = make_network(arch, 2, 1, 16, parametrization="standard", generator=_gen(), **kw)
    ntk = make_network(arch, 2, 1, 16, parametrization="ntk", generator=_gen(), **kw)
    torch.testing.assert_close(std(x), ntk(x))
    # He init: unit-order output variance, weights of variance 2 / fan_in
    w = std.weights[0]
    assert abs(float(w.var()) * w[0].numel() / 2 - 1) < 0.3


def test_bad_arguments():
    with pytest.raises(ValueError, match="width"):
        VanillaCNN(1, 1, 0)
    with pytest.raises(ValueError, match="width"):
        UNet(1, 1, -3)
    with pytest.raises(ValueError, match="architecture"):
        make_network("resnet", 1, 1, 4)
    with pytest.raises(ValueError, match="parametrization"):
        UNet(1, 1, 4, parametrization="mup")
    with pytest.raises(ValueError, match="odd"):
        VanillaCNN(1, 1, 4, patch_size=4)


@pytest.mark.parametrize("arch", ["vanilla", "unet"])
def test_ntk_matvec_matches_explicit_jacobian(arch):
    net = make_network(arch, 1, 1, 4, patch_size=3, generator=_gen(), dtype=torch.float64)
    x = torch.randn(1, 1, 8, 8, generator=_gen(1), dtype=torch.float64)
    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach() for p in net.parameters())

    def f(*ws):
        return torch.func.functional_call(net, dict(zip(names, ws, strict=True)), (x,)).reshape(-1)

    argnums = (0, 1) if arch == "vanilla" else tuple(range(9))
    with torch_threads(1):  # many tiny ops: one thread is faster, and robust to a busy machine
        jac = torch.cat(
            [j.reshape(64, -1) for j in torch.func.jacrev(f, argnums=argnums)(*params)], 1
        )
    ntk = jac @ jac.T
    v = torch.randn(64, generator=_gen(2), dtype=torch.float64)
    torch.testing.assert_close(ntk_matvec(net, x, v.reshape(1, 1, 8, 8)).reshape(-1), ntk @ v)
    torch.testing.assert_close(empirical_ntk(net, x, columns=[3, 10]), ntk[:, [3, 10]])
    lam = ntk_top_eigenvalue(net, x, n_iter=30, generator=_gen())
    assert lam == pytest.approx(float(torch.linalg.eigvalsh(ntk)[-1]), rel=5e-2)
