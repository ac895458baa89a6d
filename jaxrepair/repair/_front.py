"""Fronts of a multi-objective repair: non-dominated points and their hypervolume.

Every objective is minimised. :func:`hypervolume` is exact for two objectives (a sweep) and three
(slices along the third, each a two-objective sweep); it is tested against pymoo's ``HV``.
"""

from __future__ import annotations

import numpy as np


def non_dominated_mask(F) -> np.ndarray:
    """``True`` for the rows of ``F`` (minimised) that no other row dominates."""
    F = np.asarray(F, np.float64)
    le = np.all(F[:, None, :] <= F[None, :, :], axis=-1)
    lt = np.any(F[:, None, :] < F[None, :, :], axis=-1)
    return ~np.any(le & lt, axis=0)


def check_reference(F, ref) -> np.ndarray:
    """The reference point as an array; a clear error when it does not bound the points' nadir."""
    ref = np.asarray(ref, np.float64)
    F = np.asarray(F, np.float64)
    if ref.ndim != 1 or (F.size and ref.shape[0] != F.shape[1]):
        raise ValueError(f"the reference point {ref.tolist()} must have one value per objective ({F.shape[1]})")
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"the reference point {ref.tolist()} must be finite")
    return ref


def _hv2(P, ref) -> float:
    P = P[np.argsort(P[:, 0], kind="stable")]
    hv, y = 0.0, ref[1]
    for x, yy in P:
        if yy < y:
            hv += (ref[0] - x) * (y - yy)
            y = yy
    return hv


def hypervolume(F, ref) -> float:
    """The volume dominated by the points of ``F`` (minimised) and bounded by ``ref``; points not
    strictly better than ``ref`` in every objective add nothing."""
    F = np.asarray(F, np.float64)
    ref = check_reference(F.reshape(-1, F.shape[-1]) if F.ndim else F.reshape(1, 1), ref)
    F = F.reshape(-1, ref.shape[0])
    P = F[np.all(F < ref, axis=1) & np.all(np.isfinite(F), axis=1)]
    if len(P) == 0:
        return 0.0
    m = P.shape[1]
    if m == 2:
        return _hv2(P, ref)
    if m == 3:
        P = P[np.argsort(P[:, 2], kind="stable")]
        levels = np.append(P[:, 2], ref[2])
        return float(sum(_hv2(P[: i + 1, :2], ref[:2]) * (levels[i + 1] - levels[i]) for i in range(len(P))))
    raise ValueError(f"hypervolume is implemented for 2 or 3 objectives, got {m}")
