"""Adaptive exact ACE (``jr.causal.adaptive_ace``) against exact ACE (itself checked against the
loop reference in test_ace.py) and its intervals against sampling without replacement."""

import json

import jax
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.causal import _adaptive
from tests.test_models import _random_stats


@pytest.fixture(scope="module")
def nets(key):
    k = jax.random.split(key, 4)
    return {
        "mlp": jr.models.mlp([6, 24, 12, 2], key=k[0]),
        "cnn": _random_stats(jr.models.cnn((6, 6, 1), [3], [4], 3, key=k[1], batchnorm=True), k[2]),
        "resnet": _random_stats(jr.models.resnet((4, 4, 2), [(2, 1), (3, 1)], 3, key=k[3]), k[0]),
    }


def _fair_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[:, 2] = rng.integers(0, 2, n)
    return x


FAIR = jr.causal.Fairness.make(2, [0, 1])


@pytest.mark.parametrize("name,effect", [("mlp", "fair"), ("cnn", "target"), ("resnet", "pair"), ("mlp", "callable")])
def test_all_pairs_in_one_round_give_exact_ace(nets, name, effect):
    """With the first round already every pair, every unit's value is exact ACE's (the pair program
    evaluates each (row, α) on its own row: per-unit, per-channel, rank-1 and callable effects)."""
    model = nets[name]
    rng = np.random.default_rng(3)
    x = _fair_data(40) if name == "mlp" else rng.normal(size=(12, *model.input_shape)).astype(np.float32)
    data, eff = x, {"fair": FAIR, "target": jr.causal.TargetOutput(1, "prob")}.get(effect)
    if effect == "pair":
        data, eff = {"x": x, "x_cf": x + 0.3}, jr.causal.CounterfactualPair()
    if effect == "callable":
        eff = lambda f, b: jax.nn.softmax(f(b["x"]))[:, 1]  # noqa: E731
    values = 4
    exact = jr.causal.ace(model, data, eff, num_values=values)
    for score in ("interventional_change", "care_mean"):
        ad = jr.causal.adaptive_ace(model, data, eff, k=3, score=score, num_values=values, first=len(x) * values, block=16)
        assert ad.rounds == 1 and ad.pairs_used == ad.pairs_exact
        for s, r in ad.sites.items():
            np.testing.assert_allclose(r.estimate, exact.scores(score)[s], rtol=1e-5, atol=1e-6, err_msg=s)
            assert r.exact.all() and np.allclose(r.low, r.high)
            np.testing.assert_allclose(r.low_value, exact.sites[s].low, rtol=1e-6)
        assert [n[:2] for n in ad.top()] == [n[:2] for n in exact.top(3, score)]
        np.testing.assert_allclose(ad.baseline, exact.baseline, rtol=1e-5)


@pytest.mark.parametrize("bound", ["normal", "bernstein"])
def test_race_finds_exact_top_k_with_fewer_pairs_and_intervals_hold(nets, bound):
    model, x = nets["mlp"], _fair_data(600)
    exact = jr.causal.ace(model, x, FAIR, num_values=8)
    ad = jr.causal.adaptive_ace(model, x, FAIR, k=5, bound=bound, num_values=8, first=64, block=64, seed=1)
    want = exact.top(5)
    got = ad.top()
    assert [n[:2] for n in got] == [n[:2] for n in want]  # the set and, being exact, the order
    np.testing.assert_allclose([n.score for n in got], [n.score for n in want], rtol=1e-5, atol=1e-7)
    assert ad.pairs_used < ad.pairs_exact
    for s, r in ad.sites.items():
        e = exact.scores()[s]
        assert np.all((r.low - 1e-6 <= e) & (e <= r.high + 1e-6)), s
        assert np.all(r.pairs[r.top] == ad.population)
    assert ("Bernstein" in ad.guarantee) == (bound == "bernstein") and "top 5" in ad.guarantee
    record = ad.to_json()
    assert record["top"][0]["unit"] == want[0].unit and record["saving"] == pytest.approx(ad.saving)


def test_gaps_decide_early_and_the_race_reuses_its_programs(nets):
    """A planted cause: one unit of layer1 copies the sensitive column, so its effect towers over the
    rest and the race settles at the first round; new seeds, units and data of the same shape
    trace nothing new."""
    model = jr.models.mlp([6, 24, 12, 2], key=jax.random.key(5))
    p = model.params()
    w1 = np.array(p["layer1.pre"]["kernel"])
    w1[:, 0] = 0.0
    w1[2, 0] = 6.0
    w2 = np.array(p["layer2.pre"]["kernel"])
    w2[0, :] = 4.0
    model = model.with_params({**p, "layer1.pre": {**p["layer1.pre"], "kernel": w1},
                               "layer2.pre": {**p["layer2.pre"], "kernel": w2}})
    x = _fair_data(500)
    exact = jr.causal.ace(model, x, FAIR, sites=["layer1"], num_values=8)
    assert exact.top(1)[0][:2] == ("layer1", 0)
    ad = jr.causal.adaptive_ace(model, x, FAIR, k=1, sites=["layer1"], num_values=8, first=64, block=64)
    assert ad.top()[0][:2] == ("layer1", 0)
    assert ad.rounds == 1 and ad.saving > 5
    before = dict(_adaptive.TRACE_COUNT)
    for seed, data, units in ((2, x, None), (3, _fair_data(500, seed=9), {"layer1": list(range(20))})):
        jr.causal.adaptive_ace(model, data, FAIR, k=1, sites=["layer1"], units=units, num_values=8, first=64, block=64,
                               seed=seed)
    assert _adaptive.TRACE_COUNT == before


@pytest.mark.parametrize("bound,delta", [("normal", 0.2), ("bernstein", 0.2)])
def test_intervals_cover_sampled_means_at_the_stated_rate(bound, delta):
    """The half-widths against direct simulation: means of n of P values drawn without replacement."""
    rng = np.random.default_rng(0)
    population = rng.beta(0.5, 3.0, size=400)  # skewed, in [0, 1]
    mu = population.mean()
    covered = []
    for _ in range(4000):
        s = rng.choice(population, size=50, replace=False)
        h = _adaptive.half_width(s.std(), 50, 400, delta, bound, 1.0)
        covered.append(abs(s.mean() - mu) <= h)
    rate = np.mean(covered)
    if bound == "normal":  # approximate: close to the stated rate
        assert 1 - delta - 0.04 <= rate <= 1 - delta + 0.06
    else:  # a bound: at least the stated rate
        assert rate >= 1 - delta
    assert _adaptive.half_width(np.array(0.3), 400, 400, delta, bound, 1.0) == 0.0  # every value seen: exact


def test_score_interval_of_an_absolute_change():
    lo, hi = _adaptive.score_interval(np.array([0.1, -0.3, -0.1]), np.array([0.3, -0.2, 0.2]), 0.0, "interventional_change")
    np.testing.assert_allclose(lo, [0.1, 0.2, 0.0])
    np.testing.assert_allclose(hi, [0.3, 0.3, 0.2])


@pytest.mark.parametrize("kw,match", [
    ({"delta": 0.0}, "delta must lie in"), ({"delta": 1.5}, "delta must lie in"),
    ({"k": 0}, r"k must lie in \[1, 36\]"), ({"k": 37}, r"k must lie in \[1, 36\]"),
    ({"first": 1}, "at least 2"), ({"first": 10_000}, "exceed the 400"),
    ({"score": "care_spread"}, "care_spread is a range"), ({"bound": "hoeffding"}, "unknown bound"),
    ({"bound": "bernstein", "value_range": (1.0, 0.0)}, "finite low < high"), ({"block": 0}, "block must be"),
])
def test_bad_requests_are_refused_before_work(nets, kw, match):
    with pytest.raises(ValueError, match=match):
        jr.causal.adaptive_ace(nets["mlp"], _fair_data(50), FAIR, num_values=8, **kw)
    with pytest.raises(ValueError, match="needs value_range"):
        jr.causal.adaptive_ace(nets["mlp"], _fair_data(50), jr.causal.TargetOutput(1), bound="bernstein")
    ad = jr.causal.adaptive_ace(nets["mlp"], _fair_data(50), FAIR, k=2, num_values=8, first=400)
    with pytest.raises(ValueError, match="only the top 2"):
        ad.top(3)
    with pytest.raises(ValueError, match="no 'care_mean' ranking"):
        ad.ranking("care_mean")


def test_repair_draws_its_neurons_from_an_adaptive_ranking(nets, tmp_path):
    """``jr.repair(..., localization=adaptive)``: the search repairs the race's exact top k, and the
    report writes its ranking and plot by the race's own score."""
    x = _fair_data(200)
    y = (x[:, 0] > 0).astype(np.int32)
    splits = {n: {"x": x, "y": y} for n in ("repair", "select", "test")}
    prop = jr.properties.IndividualFairness(2, (0.0, 1.0))
    task = jr.repair.custom_task("planted", prop, splits, effect=FAIR)
    ad = jr.causal.adaptive_ace(nets["mlp"], x, FAIR, k=4, num_values=8, first=64, block=64)
    result = jr.repair(nets["mlp"], task, localization=ad, k=4, generations=3, population_size=8)
    assert [tuple(n[:2]) for n in result.selected] == [tuple(n[:2]) for n in ad.top()]
    files = jr.repair.write_result(result, tmp_path)
    record = json.loads((tmp_path / "localization.json").read_text())
    assert record["score"] == "interventional_change" and record["k"] == 4 and "scores_plot" in files
