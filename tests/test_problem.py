"""The repair Problem: one compiled search for every selection, k ≤ k_max, seed, a, budget, bounds,
same-architecture task and same-shape data; presets; CARE's preset; separate violation/accuracy sets."""

import jax
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.repair import _search
from tests.test_repair import FAST, _planted_splits

# Figures of the repair code before the Problem refactor (commit 9955647), same seeds and settings:
# the Problem must reproduce them.
BEFORE_REFACTOR = {
    "pso": {"solution": [0.0, 1.0119653940200806], "select_fitness": 0.0},
    "cma_es": {"solution": [0.0, 1.036019206047058], "select_fitness": 0.0006666660192422569},
    "census": {"layer2": [0.7046353816986084, -0.212851881980896], "layer3": [1.718970775604248],
               "layer1": [-0.08605235815048218], "select_fitness": 0.12062346190214157,
               "violation": 0.08451569825410843, "accuracy": 0.8458325862884521},
}


def _task(splits, column=2, name="planted"):
    prop = jr.properties.IndividualFairness(column, (0.0, 1.0))
    return jr.repair.custom_task(name, prop, splits, effect=jr.causal.Fairness.make(column, [0, 1]))


@pytest.fixture(scope="module")
def planted():
    model, splits = _planted_splits()
    return model, splits, _task(splits)


@pytest.mark.parametrize("strategy", ["pso", "cma_es"])
def test_reproduces_the_results_before_the_refactor(planted, strategy):
    model, _, task = planted
    r = jr.repair(model, task, selection=[("layer1", 0), ("layer1", 3)], strategy=strategy, a=0.2, bounds=(0.0, 2.0),
                  seed=3, **FAST)
    want = BEFORE_REFACTOR[strategy]
    np.testing.assert_allclose(r.solution["layer1"], want["solution"], atol=1e-6)
    assert r.search["select_fitness"] == pytest.approx(want["select_fitness"], abs=1e-7)


def test_census_repair_reproduces_the_results_before_the_refactor():
    bench = jr.zoo.load("census-sex")
    task = jr.repair.from_zoo(bench, repair_samples=1000)
    sel = [("layer2", 5), ("layer3", 1), ("layer2", 9), ("layer1", 30)]
    r = jr.repair(bench.model, task, selection=sel, strategy="pso", a=0.5, bounds=(-1.0, 3.0), seed=1, generations=15,
                  population_size=10)
    want = BEFORE_REFACTOR["census"]
    for site in ("layer1", "layer2", "layer3"):
        np.testing.assert_allclose(r.solution[site], want[site], atol=1e-5)
    assert r.search["select_fitness"] == pytest.approx(want["select_fitness"], abs=1e-6)
    assert r.after["violation"] == pytest.approx(want["violation"], abs=1e-6)
    assert r.after["accuracy"] == pytest.approx(want["accuracy"], abs=1e-6)


def test_no_recompilation_for_selections_k_seeds_a_budgets_bounds_tasks_and_data(planted):
    model, splits, task = planted
    sites = ["layer1"]
    strat = jr.repair.get_strategy("pso", generations=8, population_size=6)
    problem = jr.repair.prepare(model, task, [("layer1", 0)], k_max=3, sites=sites, strategy=strat)
    first = problem.search(seeds=0, a=0.2)
    traces = _search.TRACE_COUNT["search"]

    # new selections, every k ≤ k_max, seeds, a, budgets and bounds, as separate calls
    for sel, seed, a, md, b in [([("layer1", 3)], 1, 0.3, None, (0.0, 2.0)),
                                ([("layer1", 1), ("layer1", 2)], 2, 0.0, 0.01, (-1.0, 3.0)),
                                ([("layer1", 0), ("layer1", 1), ("layer1", 3)], 3, 1.0, 0.0, (0.5, 1.5))]:
        out = problem.search(seeds=seed, a=a, max_drop=md, bounds=b, selections=[sel])
        lo, hi = b
        got = problem.readable(out, 0)["layer1"]
        assert len(got) == len(sel) and np.all(got >= lo - 1e-6) and np.all(got <= hi + 1e-6)
    # another task on a model of the same architecture (other weights, other sensitive column)
    other = jr.models.mlp([3, 4, 2], key=jax.random.key(5))
    task2 = _task(splits, column=1, name="other")
    p2 = jr.repair.prepare(other, task2, [("layer1", 2)], k_max=3, sites=sites, strategy=strat)
    p2.search(seeds=0, a=0.5)
    # new data of the same shape
    shuffled = {k: {kk: np.roll(np.asarray(vv), 7, axis=0) for kk, vv in v.items()} for k, v in splits.items()}
    jr.repair.prepare(model, _task(shuffled), [("layer1", 1)], k_max=3, sites=sites, strategy=strat).search(seeds=4)
    assert _search.TRACE_COUNT["search"] == traces

    # one vmapped call: 4 runs, each with its own selection, seed and a (a run axis changes the shape: one trace)
    runs = problem.search(seeds=[0, 1, 2, 3], a=[0.1, 0.2, 0.3, 0.4],
                          selections=[[("layer1", 0)], [("layer1", 1)], [("layer1", 0), ("layer1", 2)], None])
    assert runs["solution"].shape == (4, 3) and _search.TRACE_COUNT["search"] == traces + 1
    # a run of the batch equals the same run alone (the first, same seed/a/selection as `first`)
    single = problem.search(seeds=[0, 5, 5, 5], a=[0.2, 0.2, 0.2, 0.2])
    np.testing.assert_allclose(single["solution"][0], first["solution"][0], atol=1e-6)
    assert _search.TRACE_COUNT["search"] == traces + 1


def test_reports_reuse_compiled_metric_programs(planted):
    model, _, task = planted
    task.report(model)
    size = jr.repair._task._metrics._cache_size()
    for seed in range(3):
        m = jr.models.mlp([3, 4, 2], key=jax.random.key(seed))
        r = task.report(m)
        assert 0.0 <= r["accuracy"] <= 1.0
    assert jr.repair._task._metrics._cache_size() == size


def test_library_call_without_options_uses_the_kinds_preset_and_records_it(planted):
    model, _, task = planted
    r = jr.repair(model, task, **FAST)
    p = jr.repair.PRESETS["custom"]
    assert r.config["preset"] == "custom" and r.config["k"] == p.k and r.config["a"] == p.a
    assert tuple(r.config["bounds"]) == p.bounds and r.config["max_drop"] == p.max_drop
    fair = jr.repair.PRESETS["fairness"]
    task_f = jr.repair.custom_task("f", task.objective.prop, _planted_splits()[1], effect=task.effect, kind="fairness")
    r = jr.repair(model, task_f, k=2, **FAST)
    assert r.config["preset"] == "fairness" and r.config["max_drop"] == fair.max_drop and r.config["a"] == fair.a
    assert jr.repair(model, task_f, k=2, max_drop=None, **FAST).config["max_drop"] is None  # None: no budget


def test_care_preset_sites_effect_swarm_and_fitness():
    model = jr.models.mlp([3, 5, 4, 2], key=jax.random.key(1))
    _, splits = _planted_splits()
    fit = {"property": splits["repair"], "accuracy": splits["select"]}
    task = jr.repair.custom_task("care-like", jr.properties.IndividualFairness(2, (0.0, 1.0)),
                                 {"repair": fit, "select": fit, "test": splits["test"]},
                                 effect=jr.causal.Fairness.make(2, [0, 1]), kind="fairness")
    care = jr.repair.PRESETS["care"]
    assert (care.k, care.a, care.bounds, care.strategy, care.init, care.score) == (13, 0.3, (0.0, 2.0), "care", "identity",
                                                                                    "care_mean")
    # sites: the Linear outputs (pre-activation), as CARE intervenes
    assert jr.repair.candidate_sites(model, "factor", care.site_kind) == ["layer1.pre", "layer2.pre"]
    # effect: class 0, raw output
    eff = jr.repair.localization_effect(task, care)
    assert (eff.target, eff.output, eff.columns) == (0, "logit", (2,))
    r = jr.repair(model, task, preset="care", k=3)
    assert {n.site for n in r.selected} <= {"layer1.pre", "layer2.pre"}
    assert r.config["strategy"]["name"] == "care" and r.config["a"] == 0.3 and r.config["init"] == "identity"
    # the loc ranks by the mean ACE of the class-0 logit difference (CARE's score)
    loc = r.localization
    assert loc.effect.startswith("Fairness (") and "target 0" in loc.effect and "output logit" in loc.effect
    assert [(n.site, n.unit) for n in r.selected] == [(n.site, n.unit) for n in loc.top(3, "care_mean")]
    # fitness: (1-a)·violation on the property set + a·(1-accuracy) on the separate accuracy set
    v = float(task.objective.prop.rate(jr.functional(model)[0], model.params(), {"x": jax.numpy.asarray(splits["repair"]["x"])}))
    _, acc = jr.repair.metrics(task.objective, model, task.data["repair"])
    acc_sel = float(np.mean(np.argmax(np.asarray(model(splits["select"]["x"])), -1) == splits["select"]["y"]))
    assert acc == pytest.approx(acc_sel)
    assert r.search["identity_select_fitness"] == pytest.approx(0.7 * v + 0.3 * (1 - acc_sel), abs=1e-6)


def test_care_swarm_starts_at_the_unrepaired_model():
    from jaxrepair.repair._pyswarms import PySwarmsPSO

    algo = PySwarmsPSO(20, 13)
    pop0 = np.full((20, 13), 0.5, np.float32)
    state = algo.init(jax.random.key(0), pop0, np.zeros(20, np.float32), algo.default_params)
    np.testing.assert_array_equal(state.position, pop0)
    v = np.asarray(state.velocity)
    assert v.min() >= 0 and v.max() < 0.5 and v.std() > 0.05  # pyswarms: uniform [0, 1) on a side of 2
    x, st = algo.ask(jax.random.key(1), state, algo.default_params)
    # the first step: no personal or global pull (all bests are the start), so x = start + 0.8·v, wrapped
    np.testing.assert_allclose(np.asarray(x), np.mod(pop0 + 0.8 * v, 1.0), atol=1e-6)


def test_separate_violation_and_accuracy_sets(planted):
    model, splits, _ = planted
    bad = {"x": splits["repair"]["x"][:10]}
    with pytest.raises(ValueError, match="exactly"):
        jr.repair.custom_task("t", jr.properties.IndividualFairness(2, (0.0, 1.0)),
                              {"repair": {"property": bad, "accuracy": splits["repair"], "extra": bad},
                               "select": splits["select"], "test": splits["test"]}, effect=jr.causal.Fairness.make(2, [0, 1]))
    t = jr.repair.custom_task("t", jr.properties.IndividualFairness(2, (0.0, 1.0)),
                              {"repair": {"property": bad, "accuracy": splits["repair"]}, "select": splits["select"],
                               "test": splits["test"]}, effect=jr.causal.Fairness.make(2, [0, 1]))
    assert t.data["repair"]["property"]["x"].shape[0] == 10 and t.data["repair"]["accuracy"]["x"].shape[0] == 300
    assert t.localize_batch["x"].shape[0] == 10


def test_trainable_params_and_batch_stats_are_split_the_nnx_way():
    cnn = jr.models.cnn((6, 6, 1), [2], [4], 3, key=jax.random.key(0), batchnorm=True)
    apply, params, stats = jr.models.split(cnn)
    assert all(set(p) <= {"kernel", "bias", "scale"} for p in params.values())
    assert stats and all(set(p) == {"mean", "var"} for p in stats.values())
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(apply(jr.models.merge(params, stats), x)), np.asarray(cnn(x)), atol=1e-6)
