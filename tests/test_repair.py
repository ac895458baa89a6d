import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.repair import _search
from tests.test_ace import planted_network
from tests.test_models import _random_stats

# Small budgets keep the suite fast; every search below shares one compiled program per strategy.
FAST = dict(generations=25, population_size=12)


def _planted_splits():
    """Labels are what the network would say without the sensitive carrier h0 (factor 0 repairs it)."""
    model = planted_network()
    out = {}
    for i, name in enumerate(["repair", "select", "test"]):
        rng = np.random.default_rng(10 + i)
        x = rng.normal(size=(300, 3)).astype(np.float32)
        x[:, 2] = rng.integers(0, 2, 300)
        h1, h3 = np.maximum(x[:, 0], 0), np.maximum(x[:, 0] + x[:, 1], 0)
        out[name] = {"x": x, "y": (h1 - 0.5 * h3 + 0.3 > 0).astype(np.int32)}
    return model, out


@pytest.fixture(scope="module")
def planted():
    model, splits = _planted_splits()
    prop = jr.properties.IndividualFairness(2, (0.0, 1.0))
    task = jr.repair.custom_task("planted", prop, splits, effect=jr.causal.Fairness.make(2, [0, 1]))
    return model, task


@pytest.mark.parametrize("strategy", ["pso", "cma_es"])
def test_repair_removes_planted_violation(planted, strategy):
    model, task = planted
    r = jr.repair(model, task, k=1, strategy=strategy, a=0.2, **FAST)
    assert [(n.site, n.unit) for n in r.selected] == [("layer1", 0)]  # the planted carrier
    assert r.before["violation"] > 0.08
    assert r.after["violation"] < 0.25 * r.before["violation"]
    assert r.after["accuracy"] >= r.before["accuracy"]
    f = float(r.solution["layer1"][0])
    assert 0.0 <= f <= 2.0 and f < 0.3
    # The repaired model is a normal model: its own test metrics are the ones reported.
    apply, params = jr.functional(r.model)
    v, acc = task.objective.metrics(apply, params, task.data["test"])
    assert float(v) == pytest.approx(r.after["violation"]) and float(acc) == pytest.approx(r.after["accuracy"])


def test_search_is_deterministic_bounded_and_compiled_once(planted):
    model, task = planted
    sel = [("layer1", 0), ("layer1", 3)]
    kw = dict(selection=sel, strategy="de", bounds=(0.5, 1.5), **FAST)
    r1 = jr.repair(model, task, seed=3, **kw)
    traces = _search.TRACE_COUNT["search"]
    r2 = jr.repair(model, task, seed=3, **kw)
    r3 = jr.repair(model, task, seed=4, a=0.3, **kw)  # new seed and a: same program
    assert _search.TRACE_COUNT["search"] == traces
    np.testing.assert_array_equal(r1.solution["layer1"], r2.solution["layer1"])
    for r in (r1, r2, r3):
        assert np.all(r.solution["layer1"] >= 0.5) and np.all(r.solution["layer1"] <= 1.5)
        h = r.search["history"]
        assert len(h["best"]) == FAST["generations"]  # one scan over all generations
        assert np.all(np.diff(h["best"]) <= 1e-7)  # best-so-far never gets worse


def test_accuracy_budget_constrains_the_chosen_repair(planted):
    model, task = planted
    # Without the carrier, violation can only go by flattening the output: a=0 trades accuracy away.
    kw = dict(selection=[("layer1", 1), ("layer1", 3)], strategy="pso", bounds=(-1.0, 3.0), a=0.0, **FAST)
    free = jr.repair(model, task, **kw)
    traces = _search.TRACE_COUNT["search"]
    tight = jr.repair(model, task, max_drop=0.0, **kw)
    loose = jr.repair(model, task, max_drop=0.02, **kw)
    assert _search.TRACE_COUNT["search"] == traces  # the budget is data, not a new program
    apply, params = jr.functional(model)
    _, acc0 = task.objective.metrics(apply, params, task.data["select"])
    assert free.search["select_accuracy"] < float(acc0) - 0.03
    assert tight.search["select_accuracy"] >= float(acc0) - 1e-6
    assert loose.search["select_accuracy"] >= float(acc0) - 0.02 - 1e-6
    assert loose.search["select_violation"] <= tight.search["select_violation"] + 1e-6
    assert free.search["select_violation"] <= loose.search["select_violation"] + 1e-6
    ft = jr.repair.finetune(model, task, a=0.0, steps=60, max_drop=0.0)
    apply2, params2 = jr.functional(ft.model)
    assert float(task.objective.metrics(apply2, params2, task.data["select"])[1]) >= float(acc0) - 1e-6
    ranking = [jr.causal.Neuron("layer1", u, 0.0) for u in (1, 3, 0, 2)]
    best = jr.repair.localized_finetune(model, task, ranking, k_values=(1, 3), a=0.2, steps=40, max_drop=0.02)
    tried = best.config["tried"]
    assert [t["k"] for t in tried] == [1, 3] and best.config["k"] in (1, 3)
    assert best.search["select_fitness"] == min(t["select_fitness"] for t in tried)


def test_early_stop_and_selection_on_select_split(planted):
    model, task = planted
    strat = jr.repair.get_strategy("pso", generations=60, population_size=8, patience=3, tol=0.5)
    r = jr.repair(model, task, selection=[("layer1", 1)], strategy=strat)
    # An improvement of 0.5 is impossible: the search stops after `patience` generations.
    assert r.search["generations_run"] == 3
    assert np.all(np.isnan(r.search["history"]["mean"][3:]))
    assert r.search["evaluations"] == 8 + 3 * 8
    assert r.search["select_fitness"] <= r.search["identity_select_fitness"]


def _factor_space(model, neurons):
    sites = list(dict.fromkeys(s for s, _ in neurons))
    space = jr.repair.FactorSpace.build(model.graph, jr.sites(model), sites, len(neurons))
    return space, space.slots(neurons)


def _folded_equals_intervened(model, neurons, factors, x):
    apply, params = jr.functional(model)
    space, slots = _factor_space(model, neurons)
    p, iv = space.realize(params, slots, jnp.asarray(factors))
    want = apply(p, x, iv)
    got = apply(space.fold(params, slots, factors), x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return want


def test_folding_matches_factor_parameterisation(key):
    k = jax.random.split(key, 3)
    mlp = jr.models.mlp([5, 6, 4, 3], key=k[0])
    x = jax.random.normal(k[1], (9, 5))
    out = _folded_equals_intervened(mlp, [("layer1", 2), ("layer2", 0), ("layer2", 3)], np.array([0.0, -0.7, 1.8], np.float32), x)
    assert not np.allclose(out, jr.functional(mlp)[0](mlp.params(), x))
    # Conv channels fold into the producer (through ReLU, and through batchnorm when present).
    for bn in (False, True):
        cnn = _random_stats(jr.models.cnn((6, 6, 1), [3, 2], [4], 3, key=k[2], batchnorm=bn), k[0])
        xi = jax.random.normal(k[1], (4, 6, 6, 1))
        _folded_equals_intervened(cnn, [("conv1", 1), ("conv2", 0), ("fc1", 2)], np.array([0.3, 1.6, -0.4], np.float32), xi)
    # the last ResNet block (relu of a residual add) folds through global average pooling, negatives too
    res = _random_stats(jr.models.resnet((4, 4, 2), [(2, 1), (3, 1)], 3, key=k[2]), k[0])
    xr = jax.random.normal(k[1], (4, 4, 4, 2))
    last = jr.models.hidden_sites(res)[-1]
    _folded_equals_intervened(res, [(last, 0), (last, 2)], np.array([-0.6, 2.2], np.float32), xr)
    with pytest.raises(ValueError, match="negative factors"):
        apply, params = jr.functional(cnn)
        sp, slots = _factor_space(cnn, [("conv1", 0)])
        sp.fold(params, slots, np.array([-0.5], np.float32))


def test_delta_space_matches_numpy_edit(key):
    mlp = jr.models.mlp([4, 5, 3, 2], key=key)
    apply, params = jr.functional(mlp)
    sp = jr.repair.DeltaSpace.build(mlp.graph, jr.sites(mlp), ["layer1", "layer2"], 3, params)
    slots = sp.slots([("layer1", 1), ("layer1", 4)])  # two of three slots used: the third is pinned to 0
    lo, hi = sp.bounds(params, slots, 0.5)
    flat = np.random.default_rng(0).uniform(np.asarray(lo), np.asarray(hi)).astype(np.float32)
    sol = sp.unflatten(slots, flat)["layer1"]
    new, iv = sp.realize(params, slots, jnp.asarray(flat))
    assert iv == {}
    w1 = np.array(params["layer1.pre"]["kernel"])
    b1 = np.array(params["layer1.pre"]["bias"])
    w2 = np.array(params["layer2.pre"]["kernel"])
    w1[:, [1, 4]] += np.asarray(sol["in"]).T
    b1[[1, 4]] += np.asarray(sol["bias"])
    w2[[1, 4], :] += np.asarray(sol["out"][0])
    np.testing.assert_allclose(new["layer1.pre"]["kernel"], w1, atol=1e-6)
    np.testing.assert_allclose(new["layer1.pre"]["bias"], b1, atol=1e-6)
    np.testing.assert_allclose(new["layer2.pre"]["kernel"], w2, atol=1e-6)
    np.testing.assert_array_equal(new["logits"]["kernel"], params["logits"]["kernel"])
    np.testing.assert_array_equal(new["layer2.pre"]["bias"], params["layer2.pre"]["bias"])
    assert np.all(np.abs(flat) <= np.asarray(hi) + 1e-7)
    assert np.all(hi.reshape(3, -1)[2] == 0) and np.all(hi.reshape(3, -1)[:2, 4:5] == 0)  # empty slot; unused fan-in
    np.testing.assert_allclose(np.asarray(sp.fold(params, slots, flat)["layer1.pre"]["kernel"]), w1, atol=1e-6)
    cnn = jr.models.cnn((6, 6, 1), [2], [4], 3, key=key)
    with pytest.raises(ValueError, match="dense → activation → dense"):
        jr.repair.DeltaSpace.build(cnn.graph, jr.sites(cnn), ["conv1"], 1, cnn.params())


def test_delta_repair_reduces_planted_violation(planted):
    model, task = planted
    r = jr.repair(model, task, k=1, space="delta", bounds=2.0, strategy="pso", **FAST)
    assert r.after["violation"] < 0.5 * r.before["violation"]
    fitness = lambda m: 0.8 * m["violation"] + 0.2 * (1 - m["accuracy"])  # noqa: E731
    assert fitness(r.after) < 0.75 * fitness(r.before)


def test_pareto_front_is_non_dominated(planted):
    model, task = planted
    front = jr.repair.pareto(model, task, a_values=(0.0, 0.3, 0.9, 1.0), seeds=(0, 1), k=2, **FAST)
    pts = front["points"]
    assert len(pts) == 8 and front["front"]
    acc = [p["select_accuracy"] for p in pts]
    vio = [p["select_violation"] for p in pts]
    for i in front["front"]:
        assert not any(acc[j] >= acc[i] and vio[j] <= vio[i] and (acc[j] > acc[i] or vio[j] < vio[i]) for j in range(8))
    for i in set(range(8)) - set(front["front"]):
        assert any(acc[j] >= acc[i] and vio[j] <= vio[i] and (acc[j] > acc[i] or vio[j] < vio[i]) for j in range(8))
    # a = 1 ignores the violation: that point keeps more violation than a = 0.
    assert pts[0]["select_violation"] <= pts[3]["select_violation"]
    assert jr.repair.non_dominated([0.9, 0.8, 0.9, 0.7], [0.1, 0.05, 0.2, 0.05]) == [0, 1]


def test_baselines(planted):
    model, task = planted
    carrier = [jr.causal.Neuron("layer1", 0, 1.0)]
    pr = jr.repair.prune(model, task, carrier)
    assert pr.after["violation"] == 0.0 and pr.after["accuracy"] == 1.0
    assert np.all(np.asarray(pr.model.params()["logits"]["kernel"])[0] == 0)
    ft = jr.repair.finetune(model, task, neurons=carrier, steps=100, learning_rate=0.05)
    assert ft.after["violation"] < ft.before["violation"]
    changed = jax.tree.map(lambda a, b: np.asarray(a) != np.asarray(b), ft.model.params(), model.params())
    assert not changed["layer1.pre"]["kernel"][:, 1:].any()  # only the selected neuron's weights moved
    assert not changed["logits"]["kernel"][1:].any()
    rnd = jr.repair(model, task, k=1, selection="random", seed=5, **FAST)
    assert rnd.method == "random-pso" and len(rnd.selected) == 1


def test_choose_takes_the_lowest_select_violation_within_the_budget(planted):
    import types

    model, task = planted
    carrier = [jr.causal.Neuron("layer1", 0, 1.0)]
    pruned = jr.repair.prune(model, task, carrier)  # removes the violation, keeps accuracy
    p = model.params()
    p["logits"]["bias"] = p["logits"]["bias"] + np.array([0.0, 50.0], np.float32)  # always class 1: no violation
    constant = types.SimpleNamespace(model=model.with_params(p), method="constant", after={})
    unchanged = types.SimpleNamespace(model=model, method="unchanged", after={})
    best, rows = jr.repair.choose(model, task, [unchanged, constant, pruned], max_drop=0.01)
    assert best is pruned
    sel = {r["method"]: r for r in rows}
    v0, a0 = jr.repair.metrics(task.objective, model, task.data["select"])
    assert sel["unchanged"]["select_violation"] == pytest.approx(v0) and sel["unchanged"]["within_budget"]
    assert sel["constant"]["select_violation"] == 0.0 and not sel["constant"]["within_budget"]  # loses accuracy
    assert sel["prune"]["select_violation"] == 0.0 and sel["prune"]["select_accuracy"] >= a0
    best, _ = jr.repair.choose(model, task, [constant], max_drop=0.01)
    assert best is None
    # a constant predictor is refused for what it is, judged on the select split (its after={} says nothing)
    best, rows = jr.repair.choose(model, task, [constant], max_drop=1.0)
    assert best is None and rows[0]["degenerate"] and sel["prune"]["degenerate"] is None
    with pytest.raises(ValueError, match="at least one"):
        jr.repair.choose(model, task, [])


def test_bad_input_is_named(planted):
    model, task = planted
    with pytest.raises(ValueError, match="unknown strategy"):
        jr.repair(model, task, strategy="annealing")
    with pytest.raises(ValueError, match="a must be"):
        jr.repair(model, task, a=1.5)
    with pytest.raises(ValueError, match="even"):
        jr.repair.get_strategy("open_es", population_size=7)
    with pytest.raises(ValueError, match="unknown site"):
        jr.repair(model, task, selection=[("layer9", 0)])
    with pytest.raises(IndexError, match="out of range"):
        jr.repair(model, task, selection=[("layer1", 4)])
    with pytest.raises(ValueError, match="no setting"):
        jr.repair(model, task, strategy=jr.repair.get_strategy("pso", settings={"momentum": 0.9}))
    bad = {**task.data["test"]["property"], "x": np.full((3, 3), np.nan, np.float32)}
    with pytest.raises(ValueError, match="NaN"):
        jr.repair.custom_task("bad", task.objective.prop, {"repair": bad, "select": bad, "test": bad}, effect=task.effect)


def test_cli_repair_writes_next_to_model_never_over_it(tmp_path, monkeypatch, capsys):
    import json

    from jaxrepair import cli

    monkeypatch.setenv("JAXREPAIR_CACHE", str(tmp_path / "cache"))
    bench = jr.zoo.load("german-sex")
    src = tmp_path / "m.npz"
    jr.save(bench.model, src)
    original = src.read_bytes()
    args = ["repair", str(src), "--entry", "german-sex", "--k", "2", "--generations", "3", "--population", "8",
            "--out", str(tmp_path / "out")]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    assert src.read_bytes() == original
    assert (tmp_path / "m.repaired.npz").exists() and (tmp_path / "m.repaired-1.npz").exists()
    runs = sorted((tmp_path / "out").iterdir())
    assert len(runs) == 2
    rec = json.loads((runs[0] / "repair.json").read_text())
    assert rec["config"]["strategy"]["name"] == "pso" and len(rec["selected"]) == 2
    assert set(rec["before_test"]) >= {"violation", "accuracy"} and rec["search"]["generations_run"] <= 3
    assert (runs[0] / "repair.md").exists() and (runs[0] / "fitness.png").exists()
    repaired = jr.load(tmp_path / "m.repaired.npz")
    assert repaired.meta["repair"]["method"] == "ace-pso"
    out = capsys.readouterr().out
    assert "violation" in out and "accuracy" in out
    assert cli.main(["repair", str(src), "--entry", "german-sex", "--strategy", "nope", "--out", str(tmp_path / "o2")]) == 2

    # a model that came as ONNX is handed back as ONNX too
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    jr.convert.to_onnx(bench.model, tmp_path / "g.onnx")
    assert cli.main(["repair", str(tmp_path / "g.onnx"), "--entry", "german-sex", "--k", "2", "--generations", "3",
                     "--population", "8", "--out", str(tmp_path / "o3")]) == 0
    back = onnx.load(str(tmp_path / "g.repaired.onnx"))
    x = np.asarray(bench.splits["test"]["x"][:16], np.float32)
    npz = jr.load(tmp_path / "g.repaired.npz")
    got = ReferenceEvaluator(back).run(None, {back.graph.input[0].name: x})[0]
    np.testing.assert_allclose(got, np.asarray(npz(x)), atol=1e-5, rtol=1e-5)
