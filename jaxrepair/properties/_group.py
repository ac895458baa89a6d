"""Group fairness metrics, named as the field names them.

* A per-group breakdown — count, selection rate ``P(ŷ=1)``, true- and false-positive rate, accuracy
  for every value of the sensitive attribute — like Fairlearn's ``MetricFrame(...).by_group``.
* Fairlearn's unsigned differences (``fairlearn.metrics``, between groups): the demographic-parity
  difference ``max_g − min_g`` of the selection rate, and the equalised-odds difference, the larger
  of the TPR and FPR spreads (``agg="worst_case"``).
* AIF360's signed differences (``aif360.metrics.ClassificationMetric``) between the unprivileged
  rows (every row whose value is not privileged, pooled) and the privileged ones: statistical
  parity ``P(ŷ=1 | u) − P(ŷ=1 | p)`` and average odds ``½[(FPR_u − FPR_p) + (TPR_u − TPR_p)]``.
  Negative means the unprivileged group gets the favourable outcome less often.

``favorable`` names the favourable class (AIF360's ``favorable_label``): with ``favorable=0`` (COMPAS,
where 1 is "reoffends") predictions and labels are read as ``ŷ == 0`` and ``y == 0``. A group
present in the batch with no positive (negative) labels has TPR (FPR) 0, as in Fairlearn (whose rates
come from sklearn's row-normalised confusion matrix); a listed value absent from the batch has count 0
and rates ``None``, and is left out of the differences. The numeric part is one jitted function of arrays.

>>> import numpy as np
>>> r = group_metrics_from_predictions(np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1]), np.array([0, 0, 1, 1]))
>>> r["by_group"]["1"]["selection_rate"], r["demographic_parity_difference"]
(0.5, 0.0)
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class GroupRates(NamedTuple):
    """Per-group rates; every field has shape ``[groups]``."""

    count: jax.Array  # [G] rows in the group
    selection_rate: jax.Array  # [G] P(ŷ=1 | g)
    true_positive_rate: jax.Array  # [G] P(ŷ=1 | g, y=1)
    false_positive_rate: jax.Array  # [G] P(ŷ=1 | g, y=0)
    accuracy: jax.Array  # [G] P(ŷ=y | g)


@jax.jit
def group_rates(y, pred, groups, values) -> GroupRates:
    """Per-group rates of binary predictions ``pred`` against labels ``y`` (both ``[B]`` in {0, 1})
    for the rows whose ``groups`` entry equals each of ``values`` (``[G]``); a value with no rows
    gets NaN rates."""
    member = (groups[:, None] == values[None, :]).astype(jnp.float32)  # [B, G]
    yhat, yt = (pred == 1).astype(jnp.float32)[:, None], (y == 1).astype(jnp.float32)[:, None]
    n = member.sum(0)
    pos, neg = (member * yt).sum(0), (member * (1 - yt)).sum(0)

    def rate(num, den):  # a present group with an empty denominator: 0, as sklearn's normalised matrix
        return jnp.where(n > 0, jnp.where(den > 0, num / jnp.maximum(den, 1.0), 0.0), jnp.nan)

    return GroupRates(
        count=n,
        selection_rate=rate((member * yhat).sum(0), n),
        true_positive_rate=rate((member * yhat * yt).sum(0), pos),
        false_positive_rate=rate((member * yhat * (1 - yt)).sum(0), neg),
        accuracy=rate((member * (yhat == yt)).sum(0), n),
    )


def _num(v) -> float | None:
    return float(v) if np.isfinite(v) else None  # an absent group's rates: None (strict JSON has no NaN)


def _spread(rates) -> float:
    r = np.asarray(rates, np.float64)
    r = r[np.isfinite(r)]
    return float(r.max() - r.min()) if r.size else float("nan")


def group_metrics_from_predictions(y, pred, groups, values=None, *, privileged=None, favorable: int = 1) -> dict:
    """The group breakdown and differences of given predictions (see the module docstring).

    Args:
      y: true labels ``[B]`` in {0, 1}.
      pred: predicted labels ``[B]`` in {0, 1}.
      groups: the sensitive attribute's value per row ``[B]``.
      values: the attribute's values to report (default: those in ``groups``).
      privileged: a value or a sequence of values forming AIF360's privileged group; ``None`` leaves
        out the signed differences.
      favorable: the favourable class (1, or 0 when class 1 is the harmful outcome).

    Returns:
      ``{"values", "by_group": {str(value): {count, selection_rate, true_positive_rate,
      false_positive_rate, accuracy}}, "demographic_parity_difference", "equalized_odds_difference"}``
      plus ``"privileged"``, ``"statistical_parity_difference"`` and ``"average_odds_difference"``
      when ``privileged`` is given.
    """
    if favorable not in (0, 1):
        raise ValueError(f"favorable must be the class 0 or 1, got {favorable!r}")
    y, pred, g = (np.asarray(a) for a in (y, pred, groups))
    if not (y.shape == pred.shape == g.shape and y.ndim == 1):
        raise ValueError(f"y, pred and groups must be 1-D of one length; got shapes {y.shape}, {pred.shape}, {g.shape}")
    if favorable == 0:
        y, pred = 1 - y, 1 - pred
    vals = np.unique(g) if values is None else np.asarray(values)
    g32, v32 = jnp.asarray(g, jnp.float32), jnp.asarray(vals, jnp.float32)
    yj, pj = jnp.asarray(y, jnp.int32), jnp.asarray(pred, jnp.int32)
    r = jax.device_get(group_rates(yj, pj, g32, v32))
    out = {
        "values": [float(v) for v in vals],
        "favorable": favorable,
        "by_group": {f"{float(v):g}": {k: _num(getattr(r, k)[i]) for k in GroupRates._fields} for i, v in enumerate(vals)},
        "demographic_parity_difference": _spread(r.selection_rate),
        "equalized_odds_difference": max(_spread(r.true_positive_rate), _spread(r.false_positive_rate)),
    }
    if privileged is not None:
        priv = np.atleast_1d(np.asarray(privileged, np.float32))
        is_priv = jnp.asarray(np.isin(np.asarray(g, np.float32), priv), jnp.float32)
        two = jax.device_get(group_rates(yj, pj, is_priv, jnp.asarray([0.0, 1.0])))  # [unprivileged, privileged]
        out["privileged"] = [float(v) for v in priv]
        out["statistical_parity_difference"] = float(two.selection_rate[0] - two.selection_rate[1])
        out["average_odds_difference"] = float(0.5 * ((two.false_positive_rate[0] - two.false_positive_rate[1])
                                                      + (two.true_positive_rate[0] - two.true_positive_rate[1])))
    return out


def group_metrics(apply_fn, params, batch, column: int, values: Sequence[float] | None = None, *, privileged=None,
                  favorable: int = 1) -> dict:
    """The group breakdown and differences of a classifier on a labelled batch ``{"x", "y"}``,
    grouped by input column ``column``; see :func:`group_metrics_from_predictions`.

    >>> import jax, jaxrepair as jr
    >>> net = jr.models.mlp([3, 4, 2], key=jax.random.key(0))
    >>> x = np.random.default_rng(0).integers(0, 2, (50, 3)).astype(np.float32)
    >>> m = group_metrics(*jr.functional(net), {"x": x, "y": x[:, 2].astype(int)}, 0, privileged=1)
    >>> sorted(m["by_group"])
    ['0', '1']
    """
    from jaxrepair.properties._core import predict

    x = np.asarray(batch["x"])
    if not 0 <= column < x.shape[-1]:
        raise ValueError(f"sensitive column {column} is out of range for inputs with {x.shape[-1]} features")
    pred = predict(apply_fn, params, x)
    return group_metrics_from_predictions(np.asarray(batch["y"]), pred, x[:, column], values, privileged=privileged,
                                          favorable=favorable)


def demographic_parity_difference(apply_fn, params, batch, column: int) -> float:
    """Fairlearn's demographic-parity difference: max − min over groups of P(ŷ = 1 | group)."""
    return group_metrics(apply_fn, params, batch, column)["demographic_parity_difference"]


def equalized_odds_difference(apply_fn, params, batch, column: int) -> float:
    """Fairlearn's equalised-odds difference: the larger of the TPR and FPR spreads over groups."""
    return group_metrics(apply_fn, params, batch, column)["equalized_odds_difference"]
