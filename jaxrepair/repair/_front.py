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


def check_front_reference(reference, violation_before: float) -> np.ndarray:
    """A front's reference point ``(violation, accuracy loss)``: it must bound the nadir every accepted
    repair improves on — the unrepaired network's violation and no accuracy gain asked for — so a
    reference below the unrepaired violation or with a non-positive accuracy loss is refused."""
    ref = np.asarray(reference, np.float64)
    if ref.shape != (2,) or not np.all(np.isfinite(ref)):
        raise ValueError(f"a front's reference point is (violation, accuracy loss), two finite numbers; got {reference!r}")
    if ref[0] < violation_before - 1e-12 or ref[1] <= 0:
        raise ValueError(f"the reference point {tuple(ref.tolist())} does not dominate the nadir (violation "
                         f"{violation_before:.4g} of the unrepaired network, accuracy loss 0): its violation must be "
                         f"at least {violation_before:.4g} and its accuracy loss positive")
    return ref


def summarise(points: list[dict], *, before_test: dict, select_accuracy0: float, reference, max_drop,
              levels=(0.5, 0.25, 0.1)) -> dict:
    """A front from its points (``select_violation``, ``select_accuracy``, ``test_violation``,
    ``test_accuracy``): the points non-dominated on the **select** split, their hypervolume on the
    **test** split in (violation, accuracy loss) against ``reference`` (also as a share of the
    reference box ``reference[0] × reference[1]``), the point chosen on select (lowest select
    violation within ``max_drop`` of ``select_accuracy0``) with its test figures, and the best test
    accuracy among front points at or below each violation level (a share of the unrepaired
    violation)."""
    v0, acc0 = before_test["violation"], before_test["accuracy"]
    ref = check_front_reference(reference, v0)
    sel = np.asarray([[p["select_violation"], -p["select_accuracy"]] for p in points], np.float64).reshape(-1, 2)
    front = [int(i) for i in np.flatnonzero(non_dominated_mask(sel))] if len(points) else []
    test = np.asarray([[points[i]["test_violation"], acc0 - points[i]["test_accuracy"]] for i in front]).reshape(-1, 2)
    hv = hypervolume(test, ref) if len(front) else 0.0
    budget = np.inf if max_drop is None else max_drop
    ok = [i for i in front if points[i]["select_accuracy"] >= select_accuracy0 - budget - 1e-12]
    chosen = min(ok, key=lambda i: (points[i]["select_violation"], -points[i]["select_accuracy"])) if ok else None
    at = {}
    for lv in levels:
        cand = [points[i]["test_accuracy"] for i in front if points[i]["test_violation"] <= lv * v0 + 1e-12]
        at[f"{lv:g}"] = max(cand) if cand else None
    out = {"front": front, "hypervolume": hv, "hypervolume_share": hv / float(ref[0] * ref[1]) if ref[0] > 0 else 0.0,
           "reference": ref.tolist(), "chosen": chosen, "accuracy_at_violation": at}
    if chosen is not None:
        p = points[chosen]
        out["chosen_test"] = {"violation": p["test_violation"], "accuracy": p["test_accuracy"],
                              "violation_reduction": 1 - p["test_violation"] / v0 if v0 > 0 else None,
                              "accuracy_loss": acc0 - p["test_accuracy"]}
    return out
