import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.causal import _ace
from tests import reference as ref
from tests.test_models import _random_stats




@pytest.fixture(scope="module")
def small(key):
    k = jax.random.split(key, 4)
    return {
        "mlp": jr.models.mlp([5, 7, 6, 3], key=k[0]),
        "cnn": _random_stats(jr.models.cnn((6, 6, 1), [3], [4], 3, key=k[1], batchnorm=True), k[2]),
        "resnet": _random_stats(jr.models.resnet((4, 4, 2), [(2, 1), (3, 1)], 3, key=k[3]), k[0]),
    }


@pytest.mark.parametrize(
    "name,sites",
    [("mlp", ["layer1", "layer2", "layer1.pre"]), ("cnn", ["conv1", "fc1", "flatten"]), ("resnet", ["stem", "s2b1.relu1", "s2b1"])],
)
def test_ace_matches_loop_reference(small, name, sites):
    model = small[name]
    x = np.random.default_rng(0).normal(size=(23, *model.input_shape)).astype(np.float32)
    # batch_size 10 -> 3 chunks with padding; chunk_size 5 -> remainder handling in lax.map.
    loc = jr.causal.ace(model, x, jr.causal.TargetOutput(2), sites=sites, num_values=4, batch_size=10, chunk_size=5)
    params = model.params()
    for s in sites:
        pc = len(jr.sites(model)[s].shape) == 3
        alphas, curve, base = ref.ace_curve(model.graph, params, x, s, lambda f: f(x)[:, 2], 4, per_channel=pc)
        r = loc.sites[s]
        np.testing.assert_allclose(r.alphas, alphas, rtol=1e-5, atol=1e-5, err_msg=s)
        np.testing.assert_allclose(r.curve, curve, rtol=1e-5, atol=1e-5, err_msg=s)
        np.testing.assert_allclose(r.ace, curve - curve.mean(1, keepdims=True), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(loc.baseline, base, rtol=1e-5, atol=1e-5)
        sc = r.scores(loc.baseline)
        np.testing.assert_allclose(sc["care_mean"], curve.mean(1), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sc["care_spread"], curve.max(1) - curve.min(1), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sc["interventional_change"], np.abs(curve.mean(1) - base), rtol=1e-5, atol=1e-5)


def test_fairness_and_pair_effects_match_reference(small):
    model = small["mlp"]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(17, 5)).astype(np.float32)
    x[:, 3] = rng.integers(0, 3, 17)
    eff = jr.causal.Fairness.make(3, [0, 1, 2], target=1)
    loc = jr.causal.ace(model, x, eff, sites=["layer2"], num_values=5)
    _, curve, base = ref.ace_curve(model.graph, model.params(), x, "layer2", ref.fairness_effect(x, 3, [0, 1, 2]), 5)
    np.testing.assert_allclose(loc.sites["layer2"].curve, curve, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loc.baseline, base, rtol=1e-5, atol=1e-6)

    x_cf = x + 0.5
    loc = jr.causal.ace(model, {"x": x, "x_cf": x_cf}, jr.causal.CounterfactualPair(0), sites=["layer1"], num_values=3)
    _, curve, _ = ref.ace_curve(model.graph, model.params(), x, "layer1", lambda f: np.abs(f(x_cf)[:, 0] - f(x)[:, 0]), 3)
    np.testing.assert_allclose(loc.sites["layer1"].curve, curve, rtol=1e-5, atol=1e-5)


def test_plain_callable_effect_matches_structured(small):
    model = small["mlp"]
    x = np.random.default_rng(3).normal(size=(9, 5)).astype(np.float32)
    a = jr.causal.ace(model, x, jr.causal.TargetOutput(1), num_values=3)
    b = jr.causal.ace(model, x, lambda f, batch: f(batch["x"])[:, 1], num_values=3)
    for s in a.sites:
        np.testing.assert_allclose(a.sites[s].curve, b.sites[s].curve, rtol=1e-5, atol=1e-6)


def planted_network():
    """Inputs (x0, x1, s). Hidden layer: h0 = relu(s) (the only carrier of s), h1 = relu(x0),
    h2 = relu(x1) with no outgoing weight (no path to the output), h3 = relu(x0 + x1).
    logit1 = 2·h0 + h1 − 0.5·h3 + 0.3, logit0 = 0."""
    model = jr.models.mlp([3, 4, 2], key=jax.random.key(0))
    w1 = np.zeros((3, 4), np.float32)
    w1[2, 0] = 1.0
    w1[0, 1] = 1.0
    w1[1, 2] = 1.0
    w1[0, 3] = w1[1, 3] = 1.0
    w2 = np.zeros((4, 2), np.float32)
    w2[:, 1] = [2.0, 1.0, 0.0, -0.5]
    params = {"layer1.pre": {"kernel": w1, "bias": np.zeros(4, np.float32)},
              "logits": {"kernel": w2, "bias": np.array([0.0, 0.3], np.float32)}}
    return model.with_params(params)


def test_planted_cause_ranks_first_under_interventional_change():
    model = planted_network()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    x[:, 2] = rng.integers(0, 2, 200)
    eff = jr.causal.Fairness.make(2, [0, 1], target=1)
    loc = jr.causal.ace(model, x, eff, sites=["layer1"])
    ic = loc.scores("interventional_change")["layer1"]
    mean = loc.scores("care_mean")["layer1"]
    # The carrier h0 ranks first; h2 (no path to the output) scores exactly 0.
    assert loc.top(1)[0][:2] == ("layer1", 0)
    assert ic[2] == pytest.approx(0.0, abs=1e-7)
    assert ic[0] == pytest.approx(loc.baseline, rel=1e-5) and loc.baseline > 0.05
    # CARE's mean score: fixing h0 removes the unfairness, so its mean effect is 0 and it ranks last.
    assert mean[0] == pytest.approx(0.0, abs=1e-7)
    assert loc.ranking("care_mean")[-1][:2] == ("layer1", 0)
    _, curve, base = ref.ace_curve(model.graph, model.params(), x, "layer1", ref.fairness_effect(x, 2, [0, 1]))
    np.testing.assert_allclose(mean, curve.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ic, np.abs(curve.mean(1) - base), rtol=1e-5, atol=1e-6)


def test_no_recompilation_and_determinism(small):
    model = small["mlp"]
    rng = np.random.default_rng(4)
    x1 = rng.normal(size=(12, 5)).astype(np.float32)
    x2 = rng.normal(size=(12, 5)).astype(np.float32)
    eff = jr.causal.TargetOutput(0)
    a = jr.causal.ace(model, x1, eff, num_values=4)
    traces = _ace.TRACE_COUNT["program"]
    b = jr.causal.ace(model, x1, jr.causal.TargetOutput(0), num_values=4)  # equal effect, new object
    c = jr.causal.ace(model, x2, eff, num_values=4)  # new data, same shapes
    assert _ace.TRACE_COUNT["program"] == traces
    for s in a.sites:
        np.testing.assert_array_equal(a.sites[s].curve, b.sites[s].curve)
    assert not np.array_equal(a.sites["layer1"].curve, c.sites["layer1"].curve)


def test_bad_input_fails_before_compiling(small):
    model = small["mlp"]
    x = np.zeros((4, 5), np.float32)
    eff = jr.causal.TargetOutput(0)
    before = _ace.TRACE_COUNT["program"]
    with pytest.raises(ValueError, match="unknown site.*'layer9'"):
        jr.causal.ace(model, x, eff, sites=["layer9"])
    with pytest.raises(IndexError, match="site 'layer1' has 7 units"):
        jr.causal.ace(model, x, eff, units={"layer1": [7]})
    with pytest.raises(ValueError, match=r"per-example shape \(4,\).*expects \(5,\)"):
        jr.causal.ace(model, x[:, :4], eff)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"data\['x'\] contains 1 NaN"):
        jr.causal.ace(model, bad, eff)
    p = model.params()
    p["layer2.pre"]["kernel"] = p["layer2.pre"]["kernel"].at[0, 0].set(jnp.inf)
    with pytest.raises(ValueError, match=r"params\['layer2.pre'\]\['kernel'\]"):
        jr.causal.ace(model.with_params(p), x, eff)
    with pytest.raises(ValueError, match="one number per example"):
        jr.causal.ace(model, x, lambda f, b: f(b["x"]))
    with pytest.raises(ValueError, match="one number per example"):
        jr.causal.ace(model, x, lambda f, b: f(b["x"]).sum())
    assert _ace.TRACE_COUNT["program"] == before


def test_memory_is_bounded_by_chunks(small):
    """Many pairs and samples in small chunks give the same numbers as one big chunk."""
    model = small["mlp"]
    x = np.random.default_rng(5).normal(size=(40, 5)).astype(np.float32)
    eff = jr.causal.TargetOutput(1)
    a = jr.causal.ace(model, x, eff, batch_size=7, chunk_size=3)
    b = jr.causal.ace(model, x, eff, batch_size=40, chunk_size=10_000)
    for s in a.sites:
        np.testing.assert_allclose(a.sites[s].curve, b.sites[s].curve, rtol=1e-5, atol=1e-6)
