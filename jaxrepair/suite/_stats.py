"""Statistics of a suite: intervals over seeds and test rows, paired tests, multiple comparisons.

A cell is one (entry, method, seed): the per-row outcomes of the model before and after repair on
that seed's test rows — ``v0``, ``v1`` (property violated, per property row), ``w`` (the row's weight
in the rate: 1, or 0 for rows the property does not count, like BadNets' target-class images) and
``c0``, ``c1`` (prediction correct, per accuracy row). From them:

* **Intervals** — a two-stage paired bootstrap: draw the seeds with replacement, then, within each
  drawn seed, its test rows with replacement (the same rows for before and after, and for two
  methods compared on one seed: the comparison stays paired; a seed drawn twice reuses its row
  draw); the statistic is the mean over the drawn seeds. The 95% interval is the 2.5–97.5 percentile range of ``B`` replicates. Seed-to-seed
  variation (repair subsample, search randomness, the random ranking, and the split where an entry
  re-splits per seed) and row sampling both enter the interval.
* **After vs before** — a paired sign-flip permutation test: under "repair changes nothing" the
  before and after outcomes of a row are exchangeable, so the per-row differences' signs are flipped
  at random (every seed at once; the statistic is the mean over seeds of the row mean). Two-sided,
  ``(1 + #{|T*| ≥ |T|}) / (1 + B)``.
* **Method vs method** (causal vs random ranking) — the difference of the per-seed statistics, its
  two-stage bootstrap interval, and the two-sided bootstrap p-value ``min(1, 2·min(P*(d ≤ 0),
  P*(d ≥ 0)))`` (the smallest level at which the percentile interval excludes 0, floored at 1/B);
  across the entries of a family these p-values are corrected by Holm's step-down method.

With few seeds the bootstrap over seeds is coarse: the report says how many seeds and rows each
figure rests on.
"""

from __future__ import annotations

import numpy as np

B = 2000  # bootstrap replicates
B_PERM = 10_000  # permutation replicates


def rate(v, w) -> float:
    """Weighted violation rate ``sum(v·w) / sum(w)`` (NaN when no row counts)."""
    v, w = np.asarray(v, np.float64), np.asarray(w, np.float64)
    return float((v * w).sum() / w.sum()) if w.sum() > 0 else float("nan")


def _per_seed(cell: dict, pidx=None, aidx=None) -> dict:
    """The seed's statistics from its rows (``pidx``/``aidx``: resampled row indices, [B, n] or None)."""
    def take(a, idx):
        a = np.asarray(a, np.float64)
        return a[None] if idx is None else a[idx]

    v0, v1, w = (take(cell[k], pidx) for k in ("v0", "v1", "w"))
    c0, c1 = (take(cell[k], aidx) for k in ("c0", "c1"))
    ws = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r0, r1 = (v0 * w).sum(-1) / ws, (v1 * w).sum(-1) / ws
        red = np.where(r0 > 0, 1.0 - r1 / r0, np.nan)
    return {"violation_before": r0, "violation_after": r1, "violation_reduction": red,
            "accuracy_before": c0.mean(-1), "accuracy_after": c1.mean(-1),
            "accuracy_change_points": 100.0 * (c1.mean(-1) - c0.mean(-1)),
            "violation_change": r1 - r0}


STATS = ("violation_before", "violation_after", "violation_reduction", "accuracy_before", "accuracy_after",
         "accuracy_change_points", "violation_change")


def _replicates(cells_by_seed: list[list[dict]], rng, b: int = B) -> list[dict]:
    """Two-stage bootstrap replicates for several methods paired on seeds and rows.

    ``cells_by_seed[s][m]``: method ``m``'s cell on seed ``s`` (same test rows for every method of a
    seed). Returns per method ``{stat: [b]}`` — the mean over the drawn seeds of each seed's statistic
    on its drawn rows.
    """
    n_seeds = len(cells_by_seed)
    n_methods = len(cells_by_seed[0])
    draw = rng.integers(0, n_seeds, (b, n_seeds))  # [b, seeds drawn]
    out = [{k: np.zeros(b) for k in STATS} for _ in range(n_methods)]
    seen = [{k: np.zeros(b) for k in STATS} for _ in range(n_methods)]  # drawn seeds with a finite figure
    for s in range(n_seeds):
        times = (draw == s).sum(1)  # [b]: how often seed s was drawn in each replicate
        if not times.any():
            continue
        first = cells_by_seed[s][0]
        pidx = rng.integers(0, len(first["v0"]), (b, len(first["v0"])))
        aidx = rng.integers(0, len(first["c0"]), (b, len(first["c0"])))
        for m in range(n_methods):
            st = _per_seed(cells_by_seed[s][m], pidx, aidx)
            for k in STATS:
                ok = np.isfinite(st[k])
                out[m][k] += times * np.where(ok, st[k], 0.0)
                seen[m][k] += times * ok
    # the mean over the drawn seeds whose figure is defined (a reduction needs violations before),
    # as the point estimate averages over such seeds only
    with np.errstate(invalid="ignore", divide="ignore"):
        return [{k: np.where(seen[m][k] > 0, out[m][k] / seen[m][k], np.nan) for k in STATS} for m in range(n_methods)]


def _interval(x) -> list[float]:
    x = np.asarray(x)
    x = x[np.isfinite(x)]
    return [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))] if x.size else [float("nan")] * 2


def _point(cells: list[dict]) -> dict:
    per = [_per_seed(c) for c in cells]
    return {k: float(np.nanmean([p[k][0] for p in per])) if any(np.isfinite(p[k][0]) for p in per) else float("nan")
            for k in STATS}, per


def sign_flip_test(diffs: list[np.ndarray], weights: list[np.ndarray] | None = None, *, rng, b: int = B_PERM) -> float:
    """Two-sided paired permutation p-value of "mean difference 0": ``diffs[s]`` the per-row
    after − before differences of seed ``s`` (``weights[s]`` the rows' weights), the statistic the
    mean over seeds of the weighted row mean; the signs of the rows' differences are flipped at random."""
    weights = weights or [np.ones(len(d)) for d in diffs]
    stat, null = 0.0, np.zeros(b)
    for d, w in zip(diffs, weights):
        d, w = np.asarray(d, np.float64), np.asarray(w, np.float64)
        nz = (d != 0) & (w > 0)
        tot = w.sum()
        if tot <= 0:
            continue
        dd, ww = d[nz], w[nz]
        stat += float((dd * ww).sum() / tot)
        if dd.size:
            signs = rng.integers(0, 2, (b, dd.size)) * 2 - 1
            null += (signs * (dd * ww)[None]).sum(1) / tot
    if stat == 0.0 and not null.any():
        return 1.0
    return float((1 + np.sum(np.abs(null) >= abs(stat) - 1e-12)) / (1 + b))


def cell_stats(cells: list[dict], *, seed: int = 0) -> dict:
    """One method on one entry over its seeds: point estimates (mean over seeds), 95% intervals,
    the paired after-vs-before tests, and how many seeds and rows they rest on."""
    rng = np.random.default_rng(seed)
    point, _ = _point(cells)
    reps = _replicates([[c] for c in cells], rng)[0]
    out = {"seeds": len(cells), "property_rows": [int(np.sum(np.asarray(c["w"]) > 0)) for c in cells],
           "accuracy_rows": [len(c["c0"]) for c in cells],
           **{k: point[k] for k in STATS}, "ci95": {k: _interval(reps[k]) for k in STATS}}
    out["p_accuracy_change"] = sign_flip_test([np.asarray(c["c1"], float) - np.asarray(c["c0"], float) for c in cells],
                                              rng=rng)
    out["p_violation_change"] = sign_flip_test([np.asarray(c["v1"], float) - np.asarray(c["v0"], float) for c in cells],
                                               [np.asarray(c["w"], float) for c in cells], rng=rng)
    return out


def compare(cells_a: list[dict], cells_b: list[dict], *, seed: int = 0) -> dict:
    """Method A against method B on the same seeds (and so the same test rows): A − B of the
    violation reduction and of the accuracy change, with two-stage paired bootstrap intervals and
    p-values, and the seeds on which A's reduction is larger."""
    if len(cells_a) != len(cells_b):
        raise ValueError(f"compare needs the same seeds for both methods; got {len(cells_a)} and {len(cells_b)} cells")
    rng = np.random.default_rng(seed)
    pa, per_a = _point(cells_a)
    pb, per_b = _point(cells_b)
    ra, rb = _replicates([[a, b] for a, b in zip(cells_a, cells_b)], rng)
    out = {"seeds": len(cells_a)}
    for k in ("violation_reduction", "accuracy_change_points"):
        d = ra[k] - rb[k]
        lo, hi = _interval(d)
        d = d[np.isfinite(d)]
        # two-sided bootstrap p-value, (1 + count) / (1 + B) as the permutation tests count
        p = min(1.0, 2 * (1 + min(np.sum(d <= 0), np.sum(d >= 0))) / (1 + len(d))) if d.size else float("nan")
        out[k] = {"difference": pa[k] - pb[k], "ci95": [lo, hi], "p": float(p)}
    out["seeds_a_reduces_more"] = int(sum(float(x["violation_reduction"][0]) > float(y["violation_reduction"][0])
                                          for x, y in zip(per_a, per_b)))
    return out


def seed_interval(values, *, seed: int = 0, b: int = B) -> list[float]:
    """95% percentile interval of the mean of per-seed figures (time, drawdown), the seeds drawn with
    replacement."""
    v = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    return _interval(v[rng.integers(0, len(v), (b, len(v)))].mean(1))


def paired(values_a, values_b, *, seed: int = 0, b: int = B) -> dict:
    """A per-seed figure (a front's hypervolume, a time) of method A against method B on the same
    seeds: the mean difference A − B, its 95% seed-bootstrap interval, the paired t-test's two-sided
    p-value (NaN with fewer than two seeds or no spread) and the seeds on which A is larger."""
    a, bb = np.asarray(values_a, np.float64), np.asarray(values_b, np.float64)
    if a.shape != bb.shape:
        raise ValueError(f"paired needs one value per seed for both methods; got {a.shape} and {bb.shape}")
    d = a - bb
    from scipy import stats as sps

    p = float(sps.ttest_rel(a, bb).pvalue) if len(d) >= 2 and np.std(d) > 0 else (1.0 if len(d) >= 2 else float("nan"))
    return {"seeds": int(len(d)), "difference": float(d.mean()), "ci95": seed_interval(d, seed=seed, b=b), "p": p,
            "seeds_a_larger": int(np.sum(d > 0))}


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order. A NaN (a comparison
    with nothing to compare) stays NaN and does not count among the hypotheses."""
    p = np.asarray(pvalues, np.float64)
    adj = np.full(len(p), np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    running = 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite])]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


def verdict(comparison: dict, adjusted_p: float, alpha: float = 0.05) -> str:
    """``"wins"`` / ``"loses"`` (A's reduction significantly above / below B's after correction),
    ``"tie"``, or ``"n/a"`` where neither has a reduction (no violation before on the test rows)."""
    if not np.isfinite(adjusted_p):
        return "n/a"
    if adjusted_p >= alpha:
        return "tie"
    return "wins" if comparison["violation_reduction"]["difference"] > 0 else "loses"


__all__ = ["B", "STATS", "cell_stats", "compare", "holm", "paired", "rate", "seed_interval", "sign_flip_test",
           "verdict"]
