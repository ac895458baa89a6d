"""The fairness zoo: one model per entry, models that beat the majority-class rate, group metrics in
the entry's record, and the degenerate-model check on a constant predictor."""

import dataclasses

import jax
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair import properties as P

FAIR = [n for n, e in jr.zoo.ENTRIES.items() if e.kind == "fairness"]


def _recipe(e):
    c = e.config()
    return tuple((k, str(v)) for k, v in c.items() if k not in ("name", "sensitive", "privileged", "favorable"))


def test_every_fairness_entry_has_its_own_model():
    assert {"compas-race", "compas-sex", "german-sex", "german-age", "census-race", "census-sex", "census-age"} <= set(FAIR)
    recipes = [_recipe(jr.zoo.ENTRIES[n]) for n in FAIR]
    assert len(set(recipes)) == len(recipes)  # same data set and recipe would mean the same weights
    for n in FAIR:
        e = jr.zoo.ENTRIES[n]
        assert e.privileged and e.favorable in (0, 1)
        values = jr.data.load_tabular(e.dataset).sensitive_values(e.sensitive)
        priv = set(e.privileged) & set(values.tolist())
        assert priv and set(values.tolist()) - priv  # both groups exist


@pytest.fixture(scope="module")
def small_entries():
    """German and COMPAS entries trained from their seeds (a few seconds each; not cached)."""
    return {n: jr.zoo.build(n, save=False) for n in ("german-sex", "german-age", "compas-race", "compas-sex")}


@pytest.mark.parametrize("name", ["german-sex", "german-age", "compas-race", "compas-sex"])
def test_small_entries_beat_the_majority_rate_and_record_group_metrics(small_entries, name):
    b = small_entries[name]
    m = b.metrics
    y = b.splits["test"]["y"]
    assert m["majority_rate"] == pytest.approx(max(y.mean(), 1 - y.mean()))
    assert m["test_accuracy"] >= m["majority_rate"] + 0.03, (name, m["test_accuracy"], m["majority_rate"])
    assert m["fairness_violation_exhaustive"] > 0  # something to repair
    apply, params = jr.functional(b.model)
    e = b.entry
    g = P.group_metrics(apply, params, b.splits["test"], b.prop.column, b.prop.values, privileged=e.privileged,
                        favorable=e.favorable)
    for k in ("demographic_parity_difference", "equalized_odds_difference", "statistical_parity_difference",
              "average_odds_difference"):
        assert m[k] == pytest.approx(g[k], abs=1e-9)
    assert m["groups"]["by_group"] == g["by_group"]
    present = [v for v in m["groups"]["by_group"].values() if v["count"] > 0]
    assert sum(v["count"] for v in present) == len(y)
    assert not jr.repair.degeneracy(b.model, b.splits["test"])["degenerate"]


def test_german_entries_have_different_weights(small_entries):
    pa = jax.tree.leaves(jr.models.split(small_entries["german-sex"].model)[1])
    pb = jax.tree.leaves(jr.models.split(small_entries["german-age"].model)[1])
    assert any(not np.allclose(a, b) for a, b in zip(pa, pb))


def test_degeneracy_flags_a_constant_predictor_on_german(small_entries):
    b = small_entries["german-sex"]
    _, params, stats = jr.models.split(b.model)
    out = list(params)[-1]  # the output layer: zero kernel, bias for the majority class 1
    params = {**params, out: {"kernel": np.zeros_like(params[out]["kernel"]), "bias": np.array([0.0, 1.0], np.float32)}}
    const = b.model.with_params(jr.models.merge(params, stats))
    d = jr.repair.degeneracy(const, b.splits["test"])
    assert d["predicted_classes"] == 1 and "constant predictor" in d["degenerate"]
    assert d["majority_rate"] == pytest.approx(b.metrics["majority_rate"])
    m = jr.zoo.evaluate(b, const)
    assert m["test_accuracy"] == pytest.approx(m["majority_rate"])  # the constant majority guess
    assert m["fairness_violation_exhaustive"] == 0 and m["demographic_parity_difference"] == 0


def test_build_is_deterministic_for_a_seed(small_entries):
    again = jr.zoo.build("compas-sex", save=False)
    assert again.metrics["test_accuracy"] == small_entries["compas-sex"].metrics["test_accuracy"]
    assert again.metrics["groups"] == small_entries["compas-sex"].metrics["groups"]
    other = jr.zoo.build("compas-sex", save=False, epochs=1)
    assert dataclasses.replace(other.entry, epochs=10) == small_entries["compas-sex"].entry
