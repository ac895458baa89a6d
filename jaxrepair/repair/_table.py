"""Fairness tasks and metrics on the user's own table (:func:`jaxrepair.data.load_user_table`).

One convention for every command: the table's rows are split 60/20/20 (``ds.split_seed``) into
repair / select / test; a repair searches on the first, chooses on the second and reports on the
third, and :func:`evaluate_table` scores the same test split by default (``rows="all"`` for every
row). Each record says which rows it was measured on.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxrepair import causal, models, properties
from jaxrepair.repair._task import Task, custom_task, degeneracy

#: ``evaluate_table``'s row sets.
ROWS = ("test", "all")


def check_table_fits(model, ds, where: str = "the data") -> None:
    """The model's input is one row of the table's features."""
    if tuple(model.input_shape) != (len(ds.columns),):
        more = ", ..." if len(ds.columns) > 8 else ""
        raise ValueError(f"the model takes inputs of shape {tuple(model.input_shape)}; {where} has {len(ds.columns)} "
                         f"feature columns ({', '.join(ds.columns[:8])}{more})")


def table_sensitive(ds, spec: str | None) -> tuple[str, int, list[float]]:
    """``(name, column, values)`` of ``COL[:V1,V2,...]`` in the table (read with ``sensitive=COL``):
    the values given, else every value the column takes."""
    from jaxrepair import data

    if not spec:
        raise ValueError("fairness on your own data needs a sensitive column: COL[:V1,V2,...] (a name or index; "
                         "--sensitive on the command line)")
    _, values = data.parse_sensitive(spec)
    if len(ds.sensitive) != 1:
        raise ValueError(f"the table was read with sensitive columns {sorted(ds.sensitive)}; read it with "
                         f"sensitive={spec!r}")
    (name, col), = ds.sensitive.items()
    values = values if values is not None else [float(v) for v in ds.sensitive_values(name)]
    if len(values) < 2:
        raise ValueError(f"sensitive {spec}: the column takes a single value in the data; give its values")
    return name, col, values


def rows_note(ds, rows: str = "test") -> str:
    """Where a figure on the table was measured, in words (printed beside it)."""
    n = {k: len(v.y) for k, v in ds.splits.items()}
    total = sum(n.values())
    if rows == "all":
        return f"all {total} rows"
    return f"the test split: {n['test']} of {total} rows (split seed {ds.split_seed}; 60/20/20 repair/select/test)"


def table_task(model, ds, sensitive: str | None, *, name: str | None = None, where: str = "the data") -> Task:
    """A fairness repair task on the table: individual fairness of ``sensitive`` (``COL[:V1,V2]``);
    repair / select / test = its train / val / test split. ``where`` names the table in errors."""
    check_table_fits(model, ds, where)
    attr, col, values = table_sensitive(ds, sensitive)
    splits = {role: {"x": ds.splits[k].x, "y": ds.splits[k].y} for role, k in
              (("repair", "train"), ("select", "val"), ("test", "test"))}
    return custom_task(name or f"{ds.name}-{attr}", properties.IndividualFairness(col, tuple(values)), splits,
                       effect=causal.Fairness.make(col, values), kind="fairness")


def evaluate_table(model, ds, *, sensitive: str | None = None, rows: str = "test", seed: int = 0,
                   where: str = "the data") -> dict:
    """Metrics of ``model`` on the table: accuracy and degeneracy, and with ``sensitive`` the
    individual-fairness violation (a bootstrap interval) and the group gaps. ``rows``: ``"test"``
    (the test split a repair reports on; the default) or ``"all"``; ``where`` names the table in errors."""
    if rows not in ROWS:
        raise ValueError(f"rows must be one of {ROWS}, not {rows!r}")
    check_table_fits(model, ds, where)
    parts = ["test"] if rows == "test" else list(ds.splits)
    x = np.concatenate([ds.splits[k].x for k in parts])
    y = np.concatenate([ds.splits[k].y for k in parts])
    apply, params = models.functional(model)
    n_out = int(models.sites(model)[model.graph.output].shape[-1])
    if y.max() >= n_out:
        raise ValueError(f"the labels go up to {int(y.max())}; the model has {n_out} outputs")
    pred = properties.predict(apply, params, x)
    out = {"rows": int(len(x)), "measured_on": rows_note(ds, rows), "split_seed": ds.split_seed, "label": ds.label,
           "accuracy": float(np.mean(pred == y)), **degeneracy(model, {"x": x, "y": y})}
    if sensitive:
        name, col, values = table_sensitive(ds, sensitive)
        prop = properties.IndividualFairness(col, tuple(values))
        out["sensitive"] = {"column": name, "index": col, "values": values}
        out["fairness_violation"] = properties.sampled_rate(prop, apply, params, x, key=jax.random.key(seed))
        if set(np.unique(y)) <= {0, 1}:
            g = properties.group_metrics(apply, params, {"x": x, "y": y}, col, values)
            out["demographic_parity_difference"] = g["demographic_parity_difference"]
            out["equalized_odds_difference"] = g["equalized_odds_difference"]
            out["groups"] = {k: g[k] for k in ("values", "favorable", "by_group")}
    return out
