"""Non-local Bayes estimates of groups of similar patches (the guided method's pilot).

Lebrun, Buades & Morel, "A non-local Bayesian image denoising algorithm",
SIAM J. Imaging Sciences 6(3), 2013, and its IPOL description
("Implementation of the Non-Local Bayes image denoising algorithm", 2013).
Written from the papers (issue 17); parameters follow the IPOL tables where
they were measured best on our benchmark and are noted where they differ.

For each reference patch not yet estimated (raster order, the "paste trick";
reference patches on a grid of step ``stride``, and the last row and
column, so that every pixel is estimated):

1. **Group.** The reference and the ``n - 1`` other patches closest
   (squared L2 distance on the guide) in a ``(2 w + 1)^2`` search window,
   in the reference frame and, for time-lapse data, in the neighbouring
   frames given with it.
2. **Estimate.** With the group's mean ``mu`` and covariance:

   * step 1 (guide = noisy, covariance ``C`` of the noisy group, plus a
     ridge of ``1e-7`` of its mean variance):
     ``P^ = mu + (C - beta sigma^2 I) C^-1 (P - mu)``;
     a group whose variance is below ``gamma sigma^2`` (flat), or with no
     more patches than dimensions (small images), is set to ``mu``;
   * step 2 (guide = the first estimate, covariance ``C_b`` of its group):
     ``P^ = mu_b + C_b (C_b + beta sigma^2 I)^-1 (P - mu)``.

3. **Aggregate.** Every estimated patch of the reference frame is added back
   at its place (weight 1); its position is marked done. Time-lapses
   (``all_frames``): the estimated patches of the other frames too, into
   their frames (as in video non-local Bayes), only the reference frame's
   marked done.

Colour (three opponent channels, :mod:`napari_ntd._pilot`): step 1 groups on
the luminance and estimates each channel alone, step 2 groups on all channels
and estimates the colour patch as one vector.

Speed: the compiled loop (numba, ``cache=True``) runs over bands of
reference rows, each band a task on the compute pool with its own
accumulators; a band restarts the paste trick, so the band height is fixed
(:data:`BAND_ROWS`) and the result does not depend on the number of cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BAND_ROWS",
    "NLBParams",
    "available",
    "assemble",
    "bands",
    "nlb_band",
    "nlb_params",
    "nlb_reference",
]

#: Reference rows per task (fixed: the paste trick restarts in each band).
BAND_ROWS = 48

#: Reference patches on a grid of this step (and the last row and column;
#: the paste trick skips those already estimated). On 12 crops (sigma 25 /
#: 50): step 1: 30.005 dB, 0.53 s; 2: 30.018, 0.38 s; 3: 30.016, 0.30 s.
STRIDE = 3


@dataclass(frozen=True)
class NLBParams:
    """Parameters of one non-local Bayes step (see the module docstring)."""

    patch: int
    n_similar: int
    window: int  # half side of the search window
    beta: float
    gamma: float = 1.05
    flat: bool = True  # the homogeneous-area rule (step 1)
    stride: int = STRIDE  # reference patches on a grid of this step


def nlb_params(sigma255: float, channels: int) -> tuple[NLBParams, NLBParams]:
    """The two steps' parameters at noise level ``sigma255`` (on a 0-255 scale).

    Gray: the IPOL tables (patch 5, or 7 from sigma 30; 45 or 90 patches in
    step 1; 15, 25 or 30 in step 2). Colour: 5 x 5 patches and 45 / 25
    patches at every level (IPOL's 3 x 3 patches below sigma 20 and 7 x 7
    from 50 measured 0.05-0.3 dB worse on the benchmark crops). The search
    window is 23 x 23 (IPOL grows it with the group size at high noise:
    three to nine times the cost for +0.03 dB).
    """
    s = float(sigma255)
    if channels == 1:
        first = NLBParams(
            patch=5 if s < 30 else 7,
            n_similar=35 if s < 10 else 45 if s < 30 else 90,
            window=11,
            beta=1.1 if s < 15 else 1.0,
        )
        second = NLBParams(
            patch=5,
            n_similar=15 if s < 20 else 25 if s < 40 else 30,
            window=11,
            beta=1.1 if s < 15 else 1.0 if s < 35 else 0.9,
            flat=False,
        )
    else:
        first = NLBParams(patch=5, n_similar=45, window=11, beta=1.0)
        second = NLBParams(
            patch=5, n_similar=25, window=11, beta=1.2 if s < 50 else 1.0, flat=False
        )
    return first, second


def bands(height: int, patch: int) -> list[tuple[int, int]]:
    """Reference-row ranges of the tasks of one frame (:data:`BAND_ROWS` each)."""
    n_ref = height - patch + 1
    return [(r, min(r + BAND_ROWS, n_ref)) for r in range(0, n_ref, BAND_ROWS)]


def band_rows(height: int, patch: int, window: int, rows: tuple[int, int]) -> tuple[int, int]:
    """Image rows a band's estimates can reach (its accumulators' extent)."""
    return max(0, rows[0] - window), min(height, rows[1] + window + patch - 1)


def nlb_band(
    noisy: np.ndarray,
    guide: np.ndarray | None,
    sigma: float,
    params: NLBParams,
    rows: tuple[int, int],
    frame: int = 0,
    all_frames: bool = False,
    offsets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One band of one step: ``(num, den, row0)`` accumulators of the estimates.

    ``noisy`` and ``guide`` are ``(T, C, H, W)`` float32 (``guide=None``: step 1,
    grouping on the noisy image); the reference patches are those of frame
    ``frame`` with top rows in ``rows``; their groups draw on all ``T``
    frames. ``num`` (``C, h, W``) and ``den`` (``h, W``) cover image rows
    ``row0 .. row0 + h`` of frame ``frame``. ``all_frames``: the estimated
    patches of every frame are aggregated, ``num`` ``(T, C, h, W)`` and ``den``
    ``(T, h, W)`` (the paste trick still marks frame ``frame`` only).
    ``offsets`` ``(T, rows[1] - rows[0], W - patch + 1, 2)`` int: the search
    window of the reference patch at ``(i, j)`` in frame ``t != frame`` is
    centred at ``(i, j) + offsets[t, i - rows[0], j]`` (clamped to the frame),
    not at ``(i, j)``.
    """
    from ._nlbayes_kernel import band

    noisy = np.ascontiguousarray(noisy, dtype=np.float32)
    second = guide is not None
    guide = noisy if guide is None else np.ascontiguousarray(guide, dtype=np.float32)
    t_n, c, h, w = noisy.shape
    p = params.patch
    if offsets is None:
        off, reach = np.zeros((1, 1, 1, 2), np.int64), 0
    else:
        off = np.ascontiguousarray(offsets, dtype=np.int64)
        if off.shape != (t_n, rows[1] - rows[0], w - p + 1, 2):
            raise ValueError(f"offsets of shape {off.shape} for a {noisy.shape} stack, patch {p}")
        reach = int(np.abs(off[..., 0]).max()) if all_frames else 0
    r0, r1 = band_rows(h, p, params.window + reach, rows)
    t_out = noisy.shape[0] if all_frames else 1
    num = np.zeros((t_out, c, r1 - r0, w), np.float64)
    den = np.zeros((t_out, r1 - r0, w), np.float64)
    joint = second or c != 3
    dist_ch = 1 if (c == 3 and not second) else c
    band(
        noisy,
        guide,
        float(sigma) ** 2,
        params.patch,
        params.n_similar,
        params.window,
        params.beta,
        params.gamma if params.flat else -1.0,
        second,
        frame,
        rows[0],
        rows[1],
        dist_ch,
        joint,
        num,
        den,
        r0,
        params.stride,
        all_frames,
        off,
        offsets is not None,
    )
    return (num, den, r0) if all_frames else (num[0], den[0], r0)


def nlb_reference(
    noisy: np.ndarray,
    guide: np.ndarray | None,
    sigma: float,
    params: NLBParams,
    all_frames: bool = False,
    offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Slow, obvious NumPy version of one step on frame 0 of a ``(T, C, H, W)`` stack,
    one band (for the tests): ``(C, H, W)``, or ``all_frames``: the aggregated
    estimates of every frame ``(T, C, H, W)`` (a frame no group reached: NaN)."""
    from ._nlbayes_kernel import RIDGE

    noisy = noisy.astype(np.float64)
    second = guide is not None
    g = noisy if guide is None else guide.astype(np.float64)
    t_n, c, h, w = noisy.shape
    p, s2 = params.patch, sigma**2
    dist_ch = 1 if (c == 3 and not second) else c
    chans = [list(range(c))] if (second or c != 3) else [[k] for k in range(c)]
    num = np.zeros((t_n, c, h, w))
    den = np.zeros((t_n, h, w))
    done = np.zeros((h - p + 1, w - p + 1), bool)

    def patch(a, t, i, j, ch):
        return a[t, ch, i : i + p, j : j + p].ravel()

    ni, nj = h - p + 1, w - p + 1
    st = params.stride
    for i in range(ni):
        if i % st and i != ni - 1:
            continue
        for j in range(nj):
            if done[i, j] or (j % st and j != nj - 1):
                continue
            cands = []
            for t in range(t_n):
                ic, jc = i, j
                if offsets is not None and t != 0:  # the window follows the motion
                    ic = int(np.clip(i + offsets[t, i, j, 0], 0, ni - 1))
                    jc = int(np.clip(j + offsets[t, i, j, 1], 0, nj - 1))
                cands += [
                    (t, a, b)
                    for a in range(max(0, ic - params.window), min(ni, ic + params.window + 1))
                    for b in range(max(0, jc - params.window), min(nj, jc + params.window + 1))
                ]
            near = list(range(dist_ch))
            ref = patch(g, 0, i, j, near)
            dist = np.array([np.sum((patch(g, *q, near) - ref) ** 2) for q in cands])
            dist[cands.index((0, i, j))] = -1.0  # the reference first, whatever the ties
            order = np.argsort(dist, kind="stable")[: params.n_similar]
            group = [cands[k] for k in order]
            for ch in chans:
                pn = np.array([patch(noisy, *q, ch) for q in group])
                mu = pn.mean(0)
                d = pn.shape[1]
                if second:
                    pb = np.array([patch(g, *q, ch) for q in group])
                    mub = pb.mean(0)
                    cb = np.cov(pb, rowvar=False).reshape(d, d)
                    lam = params.beta * s2 + RIDGE * np.trace(cb) / d
                    est = mub + (pn - mu) @ np.linalg.solve(cb + lam * np.eye(d), cb)
                else:
                    cn = np.cov(pn, rowvar=False).reshape(d, d)
                    flat = params.flat and np.trace(cn) / d <= params.gamma * s2
                    if flat or len(group) <= d:  # flat, or too few for a covariance
                        est = np.broadcast_to(mu, pn.shape)
                    else:
                        ridge = (RIDGE * np.trace(cn) / d + 1e-300) * np.eye(d)
                        filt = np.eye(d) - params.beta * s2 * np.linalg.inv(cn + ridge)
                        est = mu + (pn - mu) @ filt.T
                for (t, a, b), e in zip(group, est, strict=True):
                    if t == 0 or all_frames:
                        num[t, ch, a : a + p, b : b + p] += e.reshape(len(ch), p, p)
            for t, a, b in group:
                if t == 0 or all_frames:
                    den[t, a : a + p, b : b + p] += 1
                if t == 0:
                    done[a, b] = True
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den[:, None]
    return out if all_frames else out[0]


def assemble(
    stacks: list[list[np.ndarray]],
    jobs: list[tuple[int, int, tuple[int, int]]],
    results: list[tuple[np.ndarray, np.ndarray, int]],
) -> list[list[np.ndarray]]:
    """The estimates ``(1, C', H, W)`` (float32) of frame 0 of every stack
    ``stacks[i][g]`` from the bands ``jobs`` (``(i, g, rows)``) and their
    :func:`nlb_band` results."""
    acc: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for (i, g, _), (num, den, r0) in zip(jobs, results, strict=True):
        if (i, g) not in acc:
            _, c, h, w = stacks[i][g].shape
            acc[i, g] = (np.zeros((c, h, w)), np.zeros((h, w)))
        tot, wsum = acc[i, g]
        tot[:, r0 : r0 + num.shape[1]] += num
        wsum[r0 : r0 + num.shape[1]] += den
    out: list[list[np.ndarray]] = [[] for _ in stacks]
    for (i, _g), (tot, wsum) in sorted(acc.items()):
        out[i].append((tot / wsum).astype(np.float32)[None])
    return out


def available() -> bool:
    """Whether the compiled loop can be used (numba importable and compiling)."""
    if "ok" not in _state:
        try:
            from . import _nlbayes_kernel  # noqa: F401

            _state["ok"] = True
        except Exception:  # numba missing or broken: the caller falls back
            _state["ok"] = False
    return _state["ok"]


_state: dict[str, bool] = {}
