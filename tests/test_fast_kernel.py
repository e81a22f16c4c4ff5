"""The fast (compiled, float32, CPU) NTK kernel against the eager reference.

* kernel values equal the float64 reference evaluation of the same float32
  inputs to 1e-5 of the kernel's scale ``s = (2/n0) |p| |q|``, including zero
  patches, collinear and anti-collinear patches and inner products at and just
  past the clamp ``|cos| = 1``;
* the Nystrom basis (and the filter it defines) is the same with both paths;
* float64, non-contiguous and autograd inputs, and a missing numba, use the
  reference unchanged;
* no host synchronisation (``.item()``, ``.cpu()``, ...) inside the Nystrom
  loops: their number does not grow with the number of blocks (GPU readiness).

No timing assertions: speed is measured by ``benchmarks/bench_kernel.py``.
"""

from __future__ import annotations

import math
import sys
import threading

import pytest
import torch

from napari_ntd._ntk import _fast_kernel, _kernel
from napari_ntd._ntk._kernel import exact_kernel, ntk_block, ntk_from_gram, ntk_from_gram_reference
from napari_ntd._ntk._nystrom import nystrom_basis
from napari_ntd._ntk._twicing import gains
from napari_ntd._util._progress import run_to_end as _run

needs_fast = pytest.mark.skipif(
    not _fast_kernel.available(), reason="fast kernel unavailable (numba missing?)"
)

TOL = 1e-5  # of the kernel's scale s = (2 / n0) |p| |q|


def _scale(sq_a: torch.Tensor, sq_b: torch.Tensor, n0: int) -> torch.Tensor:
    return (2.0 / n0) * torch.outer(sq_a.double(), sq_b.double()).sqrt()


def _check_against_float64(gram32, sq_a, sq_b, n0):
    """Fast path on float32 inputs vs the float64 reference on the same values."""
    want = ntk_from_gram_reference(gram32.double(), sq_a.double(), sq_b.double(), n0)
    got = ntk_from_gram(gram32.clone(), sq_a, sq_b, n0, fast=True)
    assert got.dtype == torch.float32
    err = (got.double() - want).abs()
    bound = TOL * _scale(sq_a, sq_b, n0)
    assert torch.all(err <= bound), float((err / bound.clamp_min(1e-300)).max())
    return got, want


@pytest.fixture
def fast_on(monkeypatch):
    monkeypatch.setattr(_kernel, "FAST_KERNEL", True)


@needs_fast
def test_fast_path_is_taken_for_float32_cpu(monkeypatch):
    def boom(*args):
        raise AssertionError("reference used")

    monkeypatch.setattr(_kernel, "ntk_from_gram_reference", boom)
    g = torch.rand(5, 7)
    ntk_from_gram(g, torch.ones(5), torch.ones(7), 3, fast=True)
    monkeypatch.setattr(_kernel, "FAST_KERNEL", True)
    ntk_from_gram(torch.rand(5, 7), torch.ones(5), torch.ones(7), 3)
    monkeypatch.setattr(_kernel, "FAST_KERNEL", False)
    with pytest.raises(AssertionError, match="reference used"):
        ntk_from_gram(torch.rand(5, 7), torch.ones(5), torch.ones(7), 3)


@needs_fast
@pytest.mark.parametrize("n0", [9, 121, 363])
def test_random_patches_with_zero_patches(n0):
    gen = torch.Generator().manual_seed(n0)
    p = torch.randn(70, n0, generator=gen) * torch.rand(70, 1, generator=gen) * 3
    q = torch.randn(90, n0, generator=gen) + 0.3
    p[[0, 33]] = 0.0
    q[[5, 89]] = 0.0
    sq_p, sq_q = (p * p).sum(1), (q * q).sum(1)
    got, want = _check_against_float64(p @ q.T, sq_p, sq_q, n0)
    # a zero patch has a zero kernel row / column, on both paths
    assert torch.all(got[[0, 33]] == 0) and torch.all(got[:, [5, 89]] == 0)
    assert torch.all(want[[0, 33]] == 0)


@needs_fast
def test_collinear_and_anticollinear_patches():
    """c = +-1 up to rounding of the float32 Gram block, and slightly off it."""
    n0 = 121
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(40, n0, generator=gen)
    eps = torch.logspace(-9, -1, 40)[:, None]
    noise = torch.randn(40, n0, generator=gen)
    p = torch.cat([base, 2.5 * base, -base])
    q = torch.cat([base, 0.1 * base, -3.0 * base, base + eps * noise, -base + eps * noise])
    sq_p, sq_q = (p * p).sum(1), (q * q).sum(1)
    gram = p @ q.T
    got = _check_against_float64(gram, sq_p, sq_q, n0)[0].double()
    s = _scale(sq_p, sq_q, n0)
    # Theta(p, a p) = 2 s for a > 0 and 0 for a < 0, up to the float32 Gram
    # block's rounding of c near +-1 (~1e-4 s: Theta ~ sqrt(1 - |c|) there)
    pos = torch.zeros_like(s, dtype=torch.bool)
    neg = torch.zeros_like(s, dtype=torch.bool)
    for i in range(40):
        pos[[i, 40 + i], i] = pos[[i, 40 + i], 40 + i] = pos[80 + i, 80 + i] = True
        neg[[i, 40 + i], 80 + i] = neg[80 + i, [i, 40 + i]] = True
    assert torch.all((got[pos] - 2 * s[pos]).abs() <= 1e-3 * s[pos])
    assert torch.all(got[neg].abs() <= 1e-3 * s[neg])


@needs_fast
def test_values_at_and_past_the_clamp():
    """Inner products exactly at, just inside and just past +-|p||q|."""
    steps = torch.tensor([0.0, 1e-7, 1e-6, 1e-4, 1e-2, -1e-7, -1e-6])  # past the clamp if < 0
    c = torch.cat([1 - steps, -(1 - steps), torch.linspace(-1, 1, 101)])
    sq_a = torch.tensor([1.0, 4.0, 1e-6, 3e4])
    sq_b = torch.full((c.numel(),), 2.0)
    gram = (c[None, :] * (sq_a[:, None] * sq_b[None, :]).sqrt()).float()
    _check_against_float64(gram, sq_a, sq_b, 9)
    # independent formula in plain float64 math at a few points (sq = 1, n0 = 2: s = 1)
    cs = [-1.0, -0.999, -0.5, 0.0, 0.3, 0.999999, 1.0]
    got = ntk_from_gram(torch.tensor([cs]), torch.ones(1), torch.ones(len(cs)), 2, fast=True)
    want = [(math.sqrt(1 - v * v) + 2 * (math.pi - math.acos(v)) * v) / math.pi for v in cs]
    assert torch.allclose(got[0].double(), torch.tensor(want, dtype=torch.float64), atol=1e-6)


@needs_fast
def test_fast_is_closer_to_float64_than_eager_float32_near_collinear():
    """Forming cos in float64 removes the ~1e-4 sqrt(eps) error of the eager float32 path."""
    n0 = 121
    gen = torch.Generator().manual_seed(2)
    p = torch.randn(30, n0, generator=gen)
    q = p + torch.logspace(-7, -3, 30)[:, None] * torch.randn(30, n0, generator=gen)
    sq_p, sq_q = (p * p).sum(1), (q * q).sum(1)
    gram = p @ q.T
    want = ntk_from_gram_reference(gram.double(), sq_p.double(), sq_q.double(), n0)
    s = _scale(sq_p, sq_q, n0)
    fast = ntk_from_gram(gram.clone(), sq_p, sq_q, n0, fast=True)
    eager = ntk_from_gram(gram.clone(), sq_p, sq_q, n0, fast=False)
    err_fast = float(((fast.double() - want).abs() / s).max())
    err_eager = float(((eager.double() - want).abs() / s).max())
    assert err_fast < TOL < err_eager


@needs_fast
def test_ntk_block_and_exact_kernel(fast_on):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 14, 13, generator=gen) - 0.5
    x[:, :4, :4] = 0.0
    p = _kernel.patch_matrix(x, 5)
    sq = (p * p).sum(1)
    block = ntk_block(p[:50], p, sq[:50], sq)
    want = ntk_from_gram_reference((p[:50] @ p.T).double(), sq[:50].double(), sq.double(), 50)
    assert torch.all((block.double() - want).abs() <= TOL * _scale(sq[:50], sq, 50))
    # against the all-float64 kernel: the float32 Gram block limits this to ~1e-4
    k64 = exact_kernel(x.double(), 5)
    k32 = exact_kernel(x, 5).double()
    assert float((k32 - k64).norm() / k64.norm()) < 1e-4


def test_float64_uses_the_reference_unchanged(monkeypatch):
    def boom(*args):
        raise AssertionError("fast path used for float64")

    monkeypatch.setattr(_fast_kernel, "ntk_from_gram_fast", boom)
    gen = torch.Generator().manual_seed(4)
    p = torch.randn(20, 25, generator=gen, dtype=torch.float64)
    sq = (p * p).sum(1)
    gram = p @ p.T
    got = ntk_from_gram(gram.clone(), sq, sq, 25, fast=True)
    assert torch.equal(got, ntk_from_gram_reference(gram.clone(), sq, sq, 25))
    assert got.dtype == torch.float64
    x = torch.rand(1, 12, 12, generator=gen, dtype=torch.float64) - 0.5
    cols = torch.arange(0, 144, 3)
    monkeypatch.setattr(_kernel, "FAST_KERNEL", True)
    b_on = _run(nystrom_basis(x, cols, patch_size=3, block_pixels=40))
    monkeypatch.setattr(_kernel, "FAST_KERNEL", False)
    b_off = _run(nystrom_basis(x, cols, patch_size=3, block_pixels=40))
    assert torch.equal(b_on.vectors, b_off.vectors) and torch.equal(b_on.values, b_off.values)


@pytest.mark.parametrize(
    "make",
    [
        lambda g: g.T,  # not contiguous
        lambda g: g.clone().requires_grad_(True),
        lambda g: g.to(torch.bfloat16),
    ],
)
def test_unsupported_blocks_fall_back(make, monkeypatch):
    def boom(*args):
        raise AssertionError("fast path used")

    monkeypatch.setattr(_fast_kernel, "ntk_from_gram_fast", boom)
    g = make(torch.rand(6, 6))
    ntk_from_gram(g if not g.requires_grad else g * 1, torch.ones(6), torch.ones(6), 3, fast=True)


def test_missing_numba_falls_back_silently(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba -> ImportError
    monkeypatch.setattr(_fast_kernel, "_state", {})
    assert not _fast_kernel.available()
    gen = torch.Generator().manual_seed(5)
    p = torch.randn(8, 9, generator=gen)
    sq = (p * p).sum(1)
    got = ntk_from_gram(p @ p.T, sq, sq, 9, fast=True)
    assert torch.equal(got, ntk_from_gram_reference(p @ p.T, sq, sq, 9))


@needs_fast
def test_thread_pool_and_concurrent_callers(monkeypatch):
    """Row tasks in the pool (forced 3 threads) from 4 threads at once: same values."""
    monkeypatch.setattr(_fast_kernel, "MAX_THREADS", 3)
    monkeypatch.setattr(_fast_kernel, "_MIN_TASK_ENTRIES", 1024)
    gen = torch.Generator().manual_seed(6)
    p, q = torch.randn(300, 49, generator=gen), torch.randn(200, 49, generator=gen)
    sq_p, sq_q = (p * p).sum(1), (q * q).sum(1)
    gram = p @ q.T
    want = ntk_from_gram_reference(gram.double(), sq_p.double(), sq_q.double(), 49)
    bound = TOL * _scale(sq_p, sq_q, 49)
    results = [None] * 4

    def call(i):
        results[i] = ntk_from_gram(gram.clone(), sq_p, sq_q, 49, fast=True)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert torch.all((r.double() - want).abs() <= bound)
        assert torch.equal(r, results[0])


@needs_fast
@pytest.mark.parametrize("rank", [None, 24])
def test_nystrom_basis_fast_equals_reference(rank, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 40, 36, generator=gen) - 0.5
    x[:, :6, :6] = 0.0
    cols = torch.randperm(40 * 36, generator=gen)[:150].sort().values
    basis = {}
    for fast in (True, False):
        monkeypatch.setattr(_kernel, "FAST_KERNEL", fast)
        basis[fast] = _run(nystrom_basis(x, cols, patch_size=5, rank=rank, block_pixels=128))
    k = basis[False].values.numel()
    assert basis[True].values.numel() == k
    assert torch.allclose(basis[True].values, basis[False].values, rtol=0, atol=1e-5)
    y = x.reshape(-1, 1).double()
    for t in (1, 5, 50):  # the filters z^t = V g_t(lambda) V^T y agree
        z = {}
        for fast, b in basis.items():
            v = b.vectors.double()
            z[fast] = (v * gains(b.values, t)[0]) @ (v.T @ y)
        assert float((z[True] - z[False]).norm() / z[False].norm()) < 1e-4


SYNCS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


@pytest.mark.parametrize("fast", [False, True])
def test_no_host_sync_inside_the_nystrom_loops(fast, monkeypatch):
    """Host round-trips do not grow with the number of blocks (GPU readiness).

    With the fast kernel (CPU only by construction) its zero-copy ``.numpy()``
    views are not syncs and are not counted; on CUDA the eager path runs.
    """
    if fast and not _fast_kernel.available():
        pytest.skip("fast kernel unavailable")
    monkeypatch.setattr(_kernel, "FAST_KERNEL", fast)
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(1, 24, 20, generator=gen) - 0.5
    cols = torch.randperm(24 * 20, generator=gen)[:60].sort().values
    counted = [n for n in SYNCS if not (fast and n == "numpy")]
    calls = {n: 0 for n in counted}

    def counting(name, orig):
        def wrapper(self, *args, **kwargs):
            calls[name] += 1
            return orig(self, *args, **kwargs)

        return wrapper

    def count(block_pixels, rank):
        for n in calls:
            calls[n] = 0
        with monkeypatch.context() as m:
            for n in counted:
                m.setattr(torch.Tensor, n, counting(n, getattr(torch.Tensor, n)))
            basis = _run(nystrom_basis(x, cols, patch_size=5, rank=rank, block_pixels=block_pixels))
        assert basis.vectors.shape[0] == 24 * 20
        return dict(calls)

    for rank in (None, 8):
        few = count(480, rank)  # 1 column block, 1 row block
        many = count(20, rank)  # 3 column blocks, 24 row blocks
        assert few == many, (rank, few, many)
        assert sum(few.values()) <= 8, few
