"""Group fairness metrics against Fairlearn (MetricFrame and its difference functions) and AIF360's
signed formulas against a plain numpy reference."""

import doctest

import jax
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair import properties as P
from jaxrepair.properties import _group

fm = pytest.importorskip("fairlearn.metrics")


def _fairlearn(y, pred, g):
    mf = fm.MetricFrame(
        metrics={"count": fm.count, "selection_rate": fm.selection_rate, "true_positive_rate": fm.true_positive_rate,
                 "false_positive_rate": fm.false_positive_rate,
                 "accuracy": lambda a, b: float(np.mean(np.asarray(a) == np.asarray(b)))},
        y_true=y, y_pred=pred, sensitive_features=g)
    return mf, fm.demographic_parity_difference(y, pred, sensitive_features=g), \
        fm.equalized_odds_difference(y, pred, sensitive_features=g)


def _check_against_fairlearn(ours, y, pred, g):
    mf, dp, eo = _fairlearn(y, pred, g)
    by = mf.by_group
    assert sorted(ours["by_group"]) == sorted(f"{float(v):g}" for v in by.index)
    for v, row in by.iterrows():
        mine = ours["by_group"][f"{float(v):g}"]
        for k in ("count", "selection_rate", "true_positive_rate", "false_positive_rate", "accuracy"):
            assert mine[k] == pytest.approx(float(row[k]), abs=1e-6), (v, k)
    assert ours["demographic_parity_difference"] == pytest.approx(dp, abs=1e-6)
    assert ours["equalized_odds_difference"] == pytest.approx(eo, abs=1e-6)


def _aif360_reference(y, pred, g, privileged, favorable=1):
    """AIF360's ClassificationMetric formulas, written out with numpy."""
    y, pred = (y == favorable), (pred == favorable)
    p = np.isin(g, np.atleast_1d(privileged))

    def rates(m):
        return pred[m].mean(), pred[m & y].mean(), pred[m & ~y].mean()  # selection, TPR, FPR

    (su, tu, fu), (sp, tp, fp) = rates(~p), rates(p)
    return su - sp, 0.5 * ((fu - fp) + (tu - tp))


@pytest.mark.parametrize("seed,groups", [(0, 2), (1, 3), (2, 5), (3, 9)])
def test_random_predictions_match_fairlearn_and_aif360(seed, groups):
    rng = np.random.default_rng(seed)
    n = 500
    g = rng.integers(1, groups + 1, n).astype(np.float32)
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.2 + 0.6 * (g / groups), 1, 0) ^ (rng.random(n) < 0.1)  # group-dependent rates
    ours = P.group_metrics_from_predictions(y, pred, g, privileged=float(groups))
    _check_against_fairlearn(ours, y, pred, g)
    spd, aod = _aif360_reference(y, pred, g, float(groups))
    assert ours["statistical_parity_difference"] == pytest.approx(spd, abs=1e-6)
    assert ours["average_odds_difference"] == pytest.approx(aod, abs=1e-6)
    assert ours["statistical_parity_difference"] < 0  # the privileged top group is selected most, by construction
    # a set of privileged values and the favourable class 0 (COMPAS: 1 is the harmful outcome)
    priv = [float(groups), float(groups - 1)] if groups > 2 else [float(groups)]
    ours0 = P.group_metrics_from_predictions(y, pred, g, privileged=priv, favorable=0)
    spd0, aod0 = _aif360_reference(y, pred, g, priv, favorable=0)
    assert ours0["statistical_parity_difference"] == pytest.approx(spd0, abs=1e-6)
    assert ours0["average_odds_difference"] == pytest.approx(aod0, abs=1e-6)


def test_group_without_positives_and_absent_value_follow_fairlearn():
    # group 2 has only negative labels: fairlearn (sklearn's normalised confusion matrix) gives TPR 0
    y = np.array([1, 0, 1, 0, 0, 0])
    pred = np.array([1, 1, 0, 0, 1, 0])
    g = np.array([0, 0, 1, 1, 2, 2], np.float32)
    ours = P.group_metrics_from_predictions(y, pred, g)
    _check_against_fairlearn(ours, y, pred, g)
    assert ours["by_group"]["2"]["true_positive_rate"] == 0.0
    # a listed value with no rows: rates None, left out of the differences
    with_absent = P.group_metrics_from_predictions(y, pred, g, values=[0, 1, 2, 7])
    assert with_absent["by_group"]["7"]["count"] == 0 and with_absent["by_group"]["7"]["selection_rate"] is None
    assert np.isnan(np.asarray(P.group_rates(y, pred, g, np.array([7.0], np.float32)).selection_rate)).all()
    assert with_absent["demographic_parity_difference"] == ours["demographic_parity_difference"]
    assert with_absent["equalized_odds_difference"] == ours["equalized_odds_difference"]


def test_zoo_like_model_matches_fairlearn():
    """A census-shaped MLP (the zoo's architecture, untrained weights at a seed) on census rows."""
    ds = jr.data.load_tabular("census")
    test = ds.splits["test"]
    x, y = test.x[:3000], test.y[:3000]
    net = jr.models.mlp([ds.num_features, 64, 32, 16, 8, 4, 2], key=jax.random.key(3),
                        normalize=(ds.splits["train"].x.mean(0), ds.splits["train"].x.std(0)))
    apply, params = jr.functional(net)
    pred = P.predict(apply, params, x)
    assert 0 < pred.mean() < 1  # both classes predicted: the check below means something
    for attr, priv in (("sex", 1.0), ("race", 4.0), ("age", [3, 4, 5, 6, 7, 8, 9])):
        col = ds.sensitive[attr]
        ours = P.group_metrics(apply, params, {"x": x, "y": y}, col, privileged=priv)
        _check_against_fairlearn(ours, y, pred, x[:, col])
        spd, aod = _aif360_reference(y, pred, x[:, col], priv)
        assert ours["statistical_parity_difference"] == pytest.approx(spd, abs=1e-6)
        assert ours["average_odds_difference"] == pytest.approx(aod, abs=1e-6)
        assert P.demographic_parity_difference(apply, params, {"x": x, "y": y}, col) == \
            ours["demographic_parity_difference"]
        assert P.equalized_odds_difference(apply, params, {"x": x, "y": y}, col) == ours["equalized_odds_difference"]


def test_group_rates_compiles_once_per_shape():
    rng = np.random.default_rng(0)
    before = _group.group_rates._cache_size()
    for _ in range(3):
        y, pred = rng.integers(0, 2, 64), rng.integers(0, 2, 64)
        g = rng.integers(0, 3, 64).astype(np.float32)
        P.group_metrics_from_predictions(y, pred, g, values=[0, 1, 2])
    assert _group.group_rates._cache_size() - before <= 1


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="favorable"):
        P.group_metrics_from_predictions([0, 1], [0, 1], [0, 1], favorable=2)
    with pytest.raises(ValueError, match="1-D of one length"):
        P.group_metrics_from_predictions([0, 1], [0, 1, 1], [0, 1])
    net = jr.models.mlp([3, 4, 2], key=jax.random.key(0))
    with pytest.raises(ValueError, match="column 5 is out of range"):
        P.group_metrics(*jr.functional(net), {"x": np.zeros((4, 3), np.float32), "y": np.zeros(4, int)}, 5)


def test_docstring_examples_run():
    res = doctest.testmod(_group)
    assert res.attempted >= 2 and res.failed == 0
