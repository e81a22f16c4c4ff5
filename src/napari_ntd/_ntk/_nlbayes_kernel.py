"""The compiled loop of :mod:`napari_ntd._nlbayes` (numba; imported on first use)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["RIDGE", "band"]

#: Ridge added to the step-1 covariance, relative to its mean variance.
RIDGE = 1e-7


@njit(cache=True, nogil=True, fastmath=True)
def band(
    noisy,
    guide,
    s2,
    p,
    n_sim,
    w,
    beta,
    gamma,
    second,
    frame,
    i0,
    i1,
    dist_ch,
    joint,
    num,
    den,
    r0,
    stride,
    all_frames,
    off,
    use_off,
):
    t_n, c_n, h, wd = noisy.shape
    ni, nj = h - p + 1, wd - p + 1
    done = np.zeros((i1 - i0, nj), dtype=np.bool_)
    n_cand = t_n * (2 * w + 1) ** 2
    dist = np.empty(n_cand)
    ct = np.empty(n_cand, dtype=np.int64)
    ci = np.empty(n_cand, dtype=np.int64)
    cj = np.empty(n_cand, dtype=np.int64)
    order = np.empty(n_cand, dtype=np.int64)
    groups = 1 if joint else c_n
    d = p * p * (c_n if joint else 1)
    nc = c_n if joint else 1
    for i in range(i0, i1):
        if i % stride and i != ni - 1:  # reference rows on a grid (and the last)
            continue
        for j in range(nj):
            if done[i - i0, j] or (j % stride and j != nj - 1):
                continue
            k = 0
            for t in range(t_n):
                i_c, j_c = i, j  # the window's centre in frame t
                if use_off and t != frame:
                    i_c = min(max(i + off[t, i - i0, j, 0], 0), ni - 1)
                    j_c = min(max(j + off[t, i - i0, j, 1], 0), nj - 1)
                for a in range(max(0, i_c - w), min(ni, i_c + w + 1)):
                    for b in range(max(0, j_c - w), min(nj, j_c + w + 1)):
                        s = 0.0
                        for c in range(dist_ch):
                            for u in range(p):
                                for v in range(p):
                                    e = guide[frame, c, i + u, j + v] - guide[t, c, a + u, b + v]
                                    s += e * e
                        # the reference patch first, whatever the ties (flat images)
                        dist[k] = -1.0 if (t == frame and a == i and b == j) else s
                        ct[k] = t
                        ci[k] = a
                        cj[k] = b
                        k += 1
            # the n nearest (ties in candidate order, as a stable sort's first n)
            n = min(n_sim, k)
            thr = np.partition(dist[:k], n - 1)[n - 1]
            m = 0
            for q in range(k):
                if dist[q] < thr:
                    order[m] = q
                    m += 1
            for q in range(k):
                if m < n and dist[q] == thr:
                    order[m] = q
                    m += 1
            for g in range(groups):
                c0 = 0 if joint else g
                pn = np.empty((n, d))
                pb = np.empty((n, d))
                for m in range(n):
                    o = order[m]
                    q = 0
                    for c in range(c0, c0 + nc):
                        for u in range(p):
                            for v in range(p):
                                pn[m, q] = noisy[ct[o], c, ci[o] + u, cj[o] + v]
                                pb[m, q] = guide[ct[o], c, ci[o] + u, cj[o] + v]
                                q += 1
                mu = np.zeros(d)
                for m in range(n):
                    mu += pn[m]
                mu /= n
                pc = pn - mu
                if second:
                    mub = np.zeros(d)
                    for m in range(n):
                        mub += pb[m]
                    mub /= n
                    bc = pb - mub
                    lam = beta * s2 * max(n - 1, 1)
                    lam += RIDGE * np.sum(bc * bc) / d + 1e-300  # tiny sigma: solvable
                    if n < d:  # C (C + l I)^-1 = B^T (B B^T + (n-1) l I)^-1 B: n x n
                        gram = bc @ bc.T
                        for q in range(n):
                            gram[q, q] += lam
                        est = (pc @ bc.T) @ np.linalg.solve(gram, bc) + mub
                    else:
                        a_mat = bc.T @ bc
                        for q in range(d):
                            a_mat[q, q] += lam
                        est = pc @ np.linalg.solve(a_mat, bc.T @ bc) + mub
                else:
                    cov = pc.T @ pc / max(n - 1, 1)
                    flat = gamma > 0 and np.trace(cov) / d <= gamma * s2
                    if flat or n <= d:
                        est = np.zeros((n, d)) + mu
                    else:  # a relative ridge keeps rank-deficient groups solvable
                        ridge = RIDGE * np.trace(cov) / d + 1e-300
                        for q in range(d):
                            cov[q, q] += ridge
                        est = pc - beta * s2 * np.linalg.solve(cov, pc.T).T + mu
                for m in range(n):
                    o = order[m]
                    if ct[o] != frame and not all_frames:
                        continue
                    f = ct[o] if all_frames else 0
                    q = 0
                    for c in range(c0, c0 + nc):
                        for u in range(p):
                            for v in range(p):
                                num[f, c, ci[o] + u - r0, cj[o] + v] += est[m, q]
                                q += 1
            for m in range(n):
                o = order[m]
                if ct[o] != frame and not all_frames:
                    continue
                f = ct[o] if all_frames else 0
                a = ci[o]
                b = cj[o]
                for u in range(p):
                    for v in range(p):
                        den[f, a + u - r0, b + v] += 1.0
                if ct[o] == frame and i0 <= a < i1:
                    done[a - i0, b] = True
