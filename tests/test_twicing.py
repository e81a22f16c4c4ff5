"""Twicing gains ``1 - (1 - lambda)^t`` (stage 3) against the obvious float64 loop."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_ntd._ntk._twicing import gains

#: Eigenvalues at the edges and inside [0, 1] (tiny ones test the log1p form).
LAMBDAS = [0.0, 1e-300, 1e-12, 1e-6, 0.1, 0.5, 0.9, 1 - 1e-9, 1.0]
TS = [0, 1, 2, 3, 7, 64, 1000, 5000]


def _slow_gains(lam: float, t: int) -> float:
    """``1 - (1 - lam)^t`` by ``t`` float64 multiplications."""
    p = 1.0
    for _ in range(t):
        p *= 1.0 - lam
    return 1.0 - p


def _assert_matches_loop(g: np.ndarray, lams, ts) -> None:
    for i, t in enumerate(ts):
        for j, lam in enumerate(lams):
            # the loop rounds (1 - lam) and each of its t products by <= 2^-53
            # relatively, so it is itself only within ~t ulps of the true value
            tol = 2.3e-16 * (t + 2)
            assert abs(g[i, j] - _slow_gains(lam, t)) <= tol, (lam, t, g[i, j])


def test_gains_equal_the_loop_on_a_grid():
    g = gains(torch.tensor(LAMBDAS, dtype=torch.float64), TS)
    assert g.dtype == torch.float64 and g.shape == (len(TS), len(LAMBDAS))
    assert torch.isfinite(g).all()
    _assert_matches_loop(g.numpy(), LAMBDAS, TS)


def test_gains_edge_values_exact():
    lam = torch.tensor(LAMBDAS, dtype=torch.float64)
    # t = 0 is the start z^0: gain 0 for every lambda, lambda = 1 included (0^0 = 1)
    assert torch.equal(gains(lam, 0)[0], torch.zeros(len(LAMBDAS), dtype=torch.float64))
    # lambda = 1 reaches y in one step and stays there; lambda = 0 never moves
    ones = torch.tensor([1.0], dtype=torch.float64)
    assert torch.equal(
        gains(ones, [0, 1, 2, 100_000])[:, 0], torch.tensor([0.0, 1.0, 1.0, 1.0]).double()
    )
    assert torch.equal(gains(torch.zeros(1), [0, 1, 100_000])[:, 0], torch.zeros(3).double())
    # float32 eigenvalues (a float32 basis) and rounding just outside [0, 1]
    g = gains(torch.tensor([-1e-7, 0.25, 1 + 1e-7], dtype=torch.float32), [0, 2])
    assert g.dtype == torch.float64 and torch.isfinite(g).all()
    assert torch.equal(g[0], torch.zeros(3).double())
    np.testing.assert_allclose(g[1].numpy(), [0.0, 1 - 0.75**2, 1.0], rtol=1e-7, atol=0)


@settings(max_examples=200, deadline=None)
@given(
    lams=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5),
    ts=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
)
def test_gains_property_equal_the_loop(lams, ts):
    g = gains(torch.tensor(lams, dtype=torch.float64), ts).numpy()
    assert np.isfinite(g).all() and (g >= 0).all() and (g <= 1).all()
    _assert_matches_loop(g, lams, ts)
