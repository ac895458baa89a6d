import dataclasses

import jax
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.causal import _ace, _screen
from tests import reference as ref
from tests.test_models import _random_stats


@dataclasses.dataclass(frozen=True)
class Squared:
    """A quadratic effect: ``(y_0 − ½·y_1)²`` of the logits."""

    def inputs(self, batch):
        return batch["x"]

    def reduce(self, out, batch):
        return (out[:, 0] - 0.5 * out[:, 1]) ** 2


def squared(f, batch):  # the same effect as a plain callable
    y = f(batch["x"])
    return (y[:, 0] - 0.5 * y[:, 1]) ** 2


@pytest.fixture(scope="module")
def nets(key):
    k = jax.random.split(key, 4)
    return {
        "mlp": jr.models.mlp([5, 7, 6, 3], key=k[0]),
        "cnn": _random_stats(jr.models.cnn((6, 6, 1), [3], [4], 3, key=k[1], batchnorm=True), k[2]),
        # the last block's output feeds global pooling and the dense head: linear downstream
        "resnet": _random_stats(jr.models.resnet((4, 4, 2), [(2, 1), (3, 1)], 3, key=k[3]), k[0]),
    }


def _data(model, n=19, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *model.input_shape)).astype(np.float32)


@pytest.mark.parametrize("name,site", [("mlp", "layer2"), ("resnet", "s2b1")])
def test_first_order_is_exact_when_downstream_is_linear(nets, name, site):
    model = nets[name]
    x = _data(model)
    pc = len(jr.sites(model)[site].shape) == 3
    alphas, curve, base = ref.ace_curve(model.graph, model.params(), x, site, lambda f: f(x)[:, 2], 5, per_channel=pc)
    est = jr.causal.taylor_ace(model, x, jr.causal.TargetOutput(2), sites=[site], num_values=5, order=1, batch_size=8)
    r = est.sites[site]
    assert r.per_channel == pc
    np.testing.assert_allclose(r.alphas, alphas, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.curve, curve, rtol=1e-4, atol=1e-5)
    assert est.baseline == pytest.approx(base, rel=1e-5, abs=1e-6)
    # the α grid is bit-for-bit exact ACE's, so curves compare point by point
    np.testing.assert_array_equal(r.alphas, jr.causal.ace(model, x, jr.causal.TargetOutput(2), sites=[site],
                                                          num_values=5, batch_size=8).sites[site].alphas)


@pytest.mark.parametrize("name,site", [("mlp", "layer2"), ("resnet", "s2b1")])
def test_second_order_is_exact_for_a_quadratic_effect_of_a_linear_downstream(nets, name, site):
    model = nets[name]
    x = _data(model, seed=1)
    pc = len(jr.sites(model)[site].shape) == 3
    _, curve, _ = ref.ace_curve(model.graph, model.params(), x, site,
                                lambda f: (f(x)[:, 0] - 0.5 * f(x)[:, 1]) ** 2, 4, per_channel=pc)
    scale = np.abs(curve).max()
    for eff, hessian in [(Squared(), "gauss_newton"), (Squared(), "exact"), (squared, "exact"), (squared, "auto")]:
        est = jr.causal.taylor_ace(model, {"x": x}, eff, sites=[site], num_values=4, order=2, hessian=hessian)
        np.testing.assert_allclose(est.sites[site].curve, curve, rtol=1e-4, atol=1e-5 * scale, err_msg=hessian)
    first = jr.causal.taylor_ace(model, x, Squared(), sites=[site], num_values=4, order=1)
    assert np.abs(first.sites[site].curve - curve).max() > 1e-2 * scale  # the curvature term matters here


def test_gauss_newton_equals_exact_hessian_on_relu_networks(nets):
    """Through ReLU, max-pool and batch norm the logits have no curvature: Gauss–Newton is exact."""
    model = nets["mlp"]
    rng = np.random.default_rng(2)
    x = rng.normal(size=(21, 5)).astype(np.float32)
    x[:, 3] = rng.integers(0, 3, 21)
    eff = jr.causal.Fairness.make(3, [0, 1, 2], target=1)
    assert jr.causal.piecewise_linear_after(model.graph, ["layer1"])
    a = jr.causal.taylor_ace(model, x, eff, num_values=5, hessian="gauss_newton", batch_size=8)
    b = jr.causal.taylor_ace(model, x, eff, num_values=5, hessian="exact", batch_size=8)
    for s in a.sites:
        np.testing.assert_allclose(a.sites[s].curve, b.sites[s].curve, rtol=1e-4, atol=1e-6)
    cnn = nets["cnn"]
    xi = _data(cnn, 13, seed=3)
    pair = {"x": xi, "x_cf": xi + 0.5}
    eff = jr.causal.CounterfactualPair(0, output="prob")
    a = jr.causal.taylor_ace(cnn, pair, eff, num_values=4, hessian="gauss_newton")
    b = jr.causal.taylor_ace(cnn, pair, eff, num_values=4, hessian="exact")
    for s in a.sites:
        np.testing.assert_allclose(a.sites[s].curve, b.sites[s].curve, rtol=1e-4, atol=1e-6)
    # a logit effect of a ReLU network has no curvature at all: second order = first order
    c1 = jr.causal.taylor_ace(cnn, xi, jr.causal.TargetOutput(1), num_values=4, order=1)
    c2 = jr.causal.taylor_ace(cnn, xi, jr.causal.TargetOutput(1), num_values=4, order=2)
    for s in c1.sites:
        np.testing.assert_allclose(c2.sites[s].curve, c1.sites[s].curve, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,site", [("mlp", "layer2"), ("resnet", "s2b1")])
def test_second_order_is_closer_for_small_interventions(nets, name, site):
    """With the logits near zero (weights scaled down) the softmax is smooth over the α range and
    the expansion's error falls with its order."""
    model = nets[name]
    p = model.params()
    last = model.graph.output
    p[last] = {k: 0.1 * v for k, v in p[last].items()}
    model = model.with_params(p)
    x = _data(model, seed=4)
    eff = jr.causal.TargetOutput(1, "prob")
    exact = jr.causal.ace(model, x, eff, sites=[site], num_values=6).sites[site].curve
    err = [np.abs(jr.causal.taylor_ace(model, x, eff, sites=[site], num_values=6, order=o).sites[site].curve
                  - exact).max() for o in (1, 2)]
    assert err[1] < 0.5 * err[0], err


def test_screen_keeps_exact_top_units(nets):
    cnn = nets["cnn"]
    xi = _data(cnn, 24, seed=5)
    pair = {"x": xi, "x_cf": xi + 0.5}
    eff = jr.causal.CounterfactualPair(0, output="prob")
    exact = jr.causal.ace(cnn, pair, eff, num_values=4)
    est = jr.causal.taylor_ace(cnn, pair, eff, num_values=4)
    top3 = {n[:2] for n in exact.top(3)}
    order = [n[:2] for n in est.ranking()]
    k = max(order.index(u) for u in top3) + 1  # fewest candidates holding exact ACE's top 3
    res = jr.causal.screen(cnn, pair, eff, candidates=k, num_values=4)
    assert isinstance(res, jr.causal.Localization)
    assert [n[:2] for n in res.top(3)] == [n[:2] for n in exact.top(3)]
    for n in res.ranking():  # the candidates' scores are exact ACE's
        i = list(exact.sites[n.site].units).index(n.unit)
        assert n.score == pytest.approx(exact.scores()[n.site][i], rel=1e-5, abs=1e-7)
    total = sum(len(r.units) for r in exact.sites.values())
    kept = {(s, int(u)) for s, r in res.sites.items() for u in r.units}
    out = {(s, int(u)) for s, us in res.screened_out.items() for u in us}
    assert len(kept) == k and len(out) == total - k and not kept & out
    assert res.compute["exact_pairs"] == 4 * k and res.compute["pairs_saved"] == 4 * (total - k)
    assert res.to_json()["compute"]["exact_units"] == k


def test_bad_arguments_raise_clear_errors(nets):
    model = nets["mlp"]
    x = _data(model, 6)
    eff = jr.causal.TargetOutput(0)
    before = _screen.TRACE_COUNT["estimate"]
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="candidates must be a positive integer"):
            jr.causal.screen(model, x, eff, candidates=bad)
    with pytest.raises(ValueError, match="unknown score 'spread'"):
        jr.causal.screen(model, x, eff, score="spread")
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        jr.causal.taylor_ace(model, x, eff, order=3)
    with pytest.raises(ValueError, match="unknown hessian 'newton'"):
        jr.causal.taylor_ace(model, x, eff, hessian="newton")
    with pytest.raises(ValueError, match="gauss_newton' needs an effect with inputs/reduce"):
        jr.causal.taylor_ace(model, x, squared, hessian="gauss_newton")
    with pytest.raises(ValueError, match=r"unknown site\(s\) \['layer9'\]"):
        jr.causal.taylor_ace(model, x, eff, sites=["layer9"])
    with pytest.raises(ValueError, match="listed more than once"):
        jr.causal.taylor_ace(model, x, eff, sites=["layer1", "layer1"])
    with pytest.raises(IndexError, match="site 'layer1' has 7 units"):  # as exact ACE (one request check)
        jr.causal.taylor_ace(model, x, eff, units={"layer1": [7]})
    with pytest.raises(ValueError, match="num_values must be at least 2"):
        jr.causal.taylor_ace(model, x, eff, num_values=1)
    with pytest.raises(ValueError, match=r"per-example shape \(4,\).*expects \(5,\)"):
        jr.causal.screen(model, x[:, :4], eff)
    with pytest.raises(ValueError, match="class 3 does not exist"):
        jr.causal.screen(model, x, jr.causal.TargetOutput(3))
    assert _screen.TRACE_COUNT["estimate"] == before  # every check before any compilation


def test_no_recompilation_for_a_new_unit_selection(nets):
    model = nets["mlp"]
    x1, x2 = _data(model, 12, seed=6), _data(model, 12, seed=7)
    eff = jr.causal.Fairness.make(3, [0.0, 1.0], target=1)
    a = jr.causal.taylor_ace(model, x1, eff, sites=["layer1"], units={"layer1": [0, 2]}, num_values=4)
    traces = _screen.TRACE_COUNT["estimate"]
    b = jr.causal.taylor_ace(model, x2, eff, sites=["layer1"], units={"layer1": [1, 3]}, num_values=4)
    assert _screen.TRACE_COUNT["estimate"] == traces
    assert not np.array_equal(a.sites["layer1"].curve, b.sites["layer1"].curve)
    jr.causal.screen(model, x1, eff, sites=["layer1"], candidates=3, num_values=4)
    est_traces, ace_traces = _screen.TRACE_COUNT["estimate"], _ace.TRACE_COUNT["program"]
    r2 = jr.causal.screen(model, x2, eff, sites=["layer1"], candidates=3, num_values=4)
    r3 = jr.causal.screen(model, x2, eff, sites=["layer1"], candidates=3, num_values=4)
    assert (_screen.TRACE_COUNT["estimate"], _ace.TRACE_COUNT["program"]) == (est_traces, ace_traces)
    np.testing.assert_array_equal(r2.sites["layer1"].curve, r3.sites["layer1"].curve)  # deterministic
