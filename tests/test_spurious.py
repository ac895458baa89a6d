"""The spurious-correlation benchmark: data, invariance property, feature ACE, its repair task and
the whole-network feature-level fine-tuners — on tiny synthetic images and a tiny ResNet."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.data import PALETTE, ColourBorder, ColourPatch, Split


def _raw(n=60, seed=0):
    rng = np.random.default_rng(seed)
    make = lambda m: Split(rng.random((m, 12, 12, 1)).astype(np.float32), rng.integers(0, 10, m).astype(np.int32))
    return {"train": make(n), "val": make(n // 2), "test": make(n // 2)}


def test_border_and_patch_change_only_their_pixels():
    x = jnp.asarray(jr.data.to_rgb32(_raw()["train"].x[:5], size=16))
    assert x.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(np.asarray(x[:, 2:14, 2:14, 0]), _raw()["train"].x[:5, ..., 0])
    c = np.array([0, 3, 9, 3, 1])
    b = np.asarray(ColourBorder(2).paint(x, c))
    for i in range(5):
        ring = np.ones((16, 16), bool)
        ring[2:14, 2:14] = False
        np.testing.assert_allclose(b[i][ring], np.broadcast_to(PALETTE[c[i]], (ring.sum(), 3)))
        np.testing.assert_array_equal(b[i][~ring], np.asarray(x[i])[~ring])
    np.testing.assert_array_equal(np.asarray(ColourBorder(2).paint(x, 4)), np.asarray(ColourBorder(2).paint(x, [4] * 5)))
    pt = np.asarray(ColourPatch(size=3).paint(jnp.asarray(b), c))
    np.testing.assert_allclose(pt[1, :3, :3], np.broadcast_to(PALETTE[3], (3, 3, 3)))
    assert pt[1, 15, 15].tolist() == [0, 0, 0] and pt[1, 0, 5].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="does not fit"):
        ColourBorder(8).paint(x, c)
    with pytest.raises(ValueError, match="grayscale"):
        jr.data.to_rgb32(np.zeros((2, 8, 8, 3)))


def test_spurious_colours_agree_at_the_rate_asked():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 20000)
    c = jr.data.spurious_colours(y, 0.95, rng)
    assert abs(np.mean(c == y) - 0.95) < 0.01
    # the disagreeing colours are uniform over the other nine
    counts = np.bincount((c[c != y] - y[c != y]) % 10, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 0.8 * counts[1:].mean()
    assert abs(np.mean(jr.data.spurious_colours(y, 0.1, rng) == y) - 0.1) < 0.01
    assert not np.any(jr.data.other_colours(c, rng) == c)
    with pytest.raises(ValueError, match="labels must lie"):
        jr.data.spurious_colours(np.array([10]), 0.5, rng)


def test_spurious_splits_layout():
    sp = jr.data.spurious_splits(_raw(), p=0.9, seed=1)
    assert set(sp) == {"train", "val", "test", "val_decorrelated", "test_decorrelated", "test_patch"}
    for s in sp.values():
        assert s["x"].shape[1:] == (32, 32, 3) and len(s["x"]) == len(s["y"]) == len(s["c"]) == len(s["c_cf"])
        assert np.all(s["c"] != s["c_cf"])
    again = jr.data.spurious_splits(_raw(), p=0.9, seed=1)
    np.testing.assert_array_equal(again["train"]["c"], sp["train"]["c"])


@pytest.fixture(scope="module")
def tiny():
    sp = jr.data.spurious_splits(_raw(80), p=0.95, seed=0)
    net = jr.models.resnet((32, 32, 3), [(4, 1), (8, 1)], 10, key=jax.random.key(1))
    entry = jr.zoo.SpuriousEntry("tiny-spurious", stages=((4, 1), (8, 1)))
    bench = jr.zoo.Benchmark(entry, net, sp, jr.properties.CounterfactualInvariance(), {})
    return bench


def test_invariance_property_and_feature_ace_against_loops(tiny):
    net, sp = tiny.model, tiny.splits
    apply, params = jr.models.functional(net)
    border = ColourBorder(2)
    x = jnp.asarray(sp["test"]["x"])
    x_cf = border.paint(x, sp["test"]["c_cf"])
    viol = np.asarray(jr.properties.CounterfactualInvariance()(apply, params, {"x": x, "x_cf": x_cf}))
    ref = [float(np.argmax(apply(params, x[i:i + 1])) != np.argmax(apply(params, x_cf[i:i + 1]))) for i in range(len(x))]
    np.testing.assert_array_equal(viol, ref)
    res = jr.causal.feature_ace(net, sp["test"]["x"], border.paint, np.arange(10), batch_size=7)
    exp = np.stack([np.mean(np.asarray(jax.nn.softmax(apply(params, border.paint(x, v)))), 0) for v in range(10)])
    np.testing.assert_allclose(res.expectation, exp, atol=1e-5)
    np.testing.assert_allclose(res.ace, exp - exp.mean(0), atol=1e-5)
    assert res.matched(np.arange(10)) == pytest.approx(np.mean(np.diag(exp - exp.mean(0))), abs=1e-6)
    with pytest.raises(ValueError, match="output"):
        jr.causal.feature_ace(net, sp["test"]["x"], border.paint, np.arange(10), output="raw")


def test_spurious_task_report_and_lowering(tiny):
    task = jr.repair.from_zoo(tiny, repair_samples=40, seed=0)
    assert task.kind == "spurious" and isinstance(task.effect, jr.causal.CounterfactualPair)
    rep = task.report(tiny.model)
    m = jr.zoo.evaluate(tiny)
    apply, params = jr.models.functional(tiny.model)  # the apply-function path gives the same figures
    assert jr.zoo.evaluate_spurious(apply, tiny.splits, 2, params=params) == pytest.approx(m)
    with pytest.raises(ValueError, match="params="):
        jr.zoo.evaluate_spurious(apply, tiny.splits, 2)
    assert rep["violation"] == m["invariance_violation"] and rep["accuracy"] == m["decorrelated_accuracy"]
    # the test property pairs are the test images and their counterfactual border: the report's violation
    v, acc = jr.repair.metrics(task.objective, tiny.model, task.data["test"])
    assert v == pytest.approx(rep["violation"]) and acc == pytest.approx(rep["accuracy"])
    head, low = jr.repair.lower(tiny.model, task, "s1b1")
    v_low, acc_low = jr.repair.metrics(low.objective, head, low.data["test"])
    assert v_low == pytest.approx(v, abs=1e-6) and acc_low == pytest.approx(acc, abs=1e-6)


def test_counterfactual_finetune_removes_a_colour_shortcut():
    """Labels are the border colour's on the training images; clp must make the decision
    invariant to the colour (the tiny CNN cannot keep the shortcut and pay no pairing cost)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 256)
    x = jr.data.to_rgb32(rng.random((256, 12, 12, 1)).astype(np.float32) * 0.2, size=16)
    border = ColourBorder(2)
    x = np.asarray(border.paint(jnp.asarray(x), y))
    net = jr.models.cnn((16, 16, 3), [8], [16], 10, key=jax.random.key(0))
    net = jr.zoo.train_classifier(net, x, y, key=jax.random.key(1), epochs=15, batch_size=64, learning_rate=1e-2)
    apply, params = jr.models.functional(net)
    pairs = {"x": jnp.asarray(x), "x_cf": border.paint(jnp.asarray(x), (y + 3) % 10)}
    prop = jr.properties.CounterfactualInvariance()
    assert float(prop.rate(apply, params, pairs)) > 0.8  # the shortcut
    fixed = jr.feature.counterfactual_finetune(net, x, y, border.recolour, mode="clp", lam=10.0, steps=200,
                                               batch_size=64, learning_rate=3e-3)
    assert float(prop.rate(*jr.models.functional(fixed), pairs)) < 0.2
    # select=: the best of the checkpoints every eval_every steps (and the start and the end), not the last
    def invariance(m):
        return -float(prop.rate(*jr.models.functional(m), pairs))

    chosen = jr.feature.counterfactual_finetune(net, x, y, border.recolour, mode="clp", lam=10.0, steps=200,
                                                batch_size=64, learning_rate=3e-3, select=invariance, eval_every=50)
    assert invariance(chosen) >= invariance(fixed)  # the last step (what `fixed` is) is one of the candidates
    irm = jr.feature.irm_finetune(net, [(x[:128], y[:128]), (x[128:], y[128:])], steps=3, batch_size=16)
    assert jax.tree.structure(irm.params()) == jax.tree.structure(net.params())
    calls = []
    kept = jr.feature.irm_finetune(net, [(x[:128], y[:128]), (x[128:], y[128:])], steps=3, batch_size=16, eval_every=1,
                                   select=lambda m: calls.append(m) or -len(calls))  # prefers the model as given
    assert len(calls) == 4 and kept is net
    with pytest.raises(ValueError, match="eval_every"):
        jr.feature.irm_finetune(net, [(x, y), (x, y)], steps=3, select=invariance, eval_every=5)
    with pytest.raises(ValueError, match="two environments"):
        jr.feature.irm_finetune(net, [(x, y)])
    with pytest.raises(ValueError, match="mode"):
        jr.feature.counterfactual_finetune(net, x, y, border.recolour, mode="pair")


def test_border_colour_reads_back_what_was_painted(tiny):
    border = ColourBorder(2)
    np.testing.assert_array_equal(border.colour(tiny.splits["train"]["x"]), tiny.splits["train"]["c"])
    x = jnp.zeros((10, 32, 32, 3))
    np.testing.assert_array_equal(border.colour(border.paint(x, np.arange(10)[::-1])), np.arange(10)[::-1])


def test_feature_methods_of_the_registry_on_a_spurious_task(tiny):
    task = jr.repair.from_zoo(tiny, repair_samples=40, seed=0)
    assert {"cf-clp", "cf-augment", "irm"} <= set(jr.repair.methods_for(task))
    base = jr.repair.metrics(task.objective, tiny.model, task.data["select"])
    a = jr.repair.preset_for("spurious").a_grad
    for name, opts in [("cf-clp", {"lam": 1.0}), ("cf-augment", {}), ("irm", {"penalty_weight": 10.0})]:
        method = jr.repair.get_method(name)
        assert method.level == "feature"
        r = method(tiny.model, task, seed=0, steps=4, **opts)
        assert r.method == name and r.config["learning_rate"] == 1e-4  # the image default
        v, acc = jr.repair.metrics(task.objective, r.model, task.data["select"])
        # the checkpoint is chosen on select, the model as given among the candidates
        assert (1 - a) * v + a * (1 - acc) <= (1 - a) * base[0] + a * (1 - base[1]) + 1e-6
        assert r.after == task.report(r.model)
    # IRM's environments: the repair images whose border colour is their label's, and the others
    x = np.asarray(task.data["repair"]["property"]["x"])
    y = np.asarray(task.data["repair"]["property"]["y"])
    agree = ColourBorder(2).colour(x) == y
    assert r.config["environments"] == [int(agree.sum()), int((~agree).sum())]


def test_the_suite_repairs_a_spurious_head_past_its_cut_but_retrains_feature_methods_whole(tiny, tmp_path,
                                                                                          monkeypatch):
    from jaxrepair.suite import _run

    fam = _run.Family("spurious", "spurious", ("tiny-spurious",), False, (), "", cut="s1b1", repair_samples=40)
    monkeypatch.setattr(_run, "families", lambda: {"spurious": fam})
    monkeypatch.setattr(_run, "SMALL_TEST", 0)  # the tiny test split is kept as it is
    monkeypatch.setattr(jr.zoo, "load", lambda name, **kw: tiny)
    lowered = []
    lower = jr.repair.lower
    monkeypatch.setattr(jr.repair, "lower", lambda *a, **kw: lowered.append(a[2]) or lower(*a, **kw))
    res = jr.suite.run("spurious", tmp_path, methods=["finetune-all", "cf-augment"], seeds=1, report=False,
                       options={"finetune-all": {"steps": 4, "eval_every": 2}, "cf-augment": {"steps": 4}},
                       progress=False)
    assert res["ran"] == 2 and lowered == ["s1b1"]  # once, for the neuron-level method only
    from jaxrepair.sweep import Store

    st = Store(tmp_path / "suite_spurious.sqlite", readonly=True)
    cells = {r["config"]["method"]: r for r in st.records()}
    st.close()
    assert cells["finetune-all"]["config"]["settings"]["cut"] == "s1b1"
    for name, r in cells.items():  # before: the same rows either way; after: the method's own figures
        rows = {k: _run.unpack(v) for k, v in r["metrics"]["outcomes"].items()}
        assert np.mean(rows["c1"]) == pytest.approx(r["metrics"]["after"]["accuracy"], abs=1e-6)
        assert np.mean(rows["v1"]) == pytest.approx(r["metrics"]["after"]["violation"], abs=1e-6)
    np.testing.assert_array_equal(_run.unpack(cells["finetune-all"]["metrics"]["outcomes"]["c0"]),
                                  _run.unpack(cells["cf-augment"]["metrics"]["outcomes"]["c0"]))
