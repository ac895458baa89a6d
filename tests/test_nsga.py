"""NSGA-II / NSGA-III against pymoo (the oracle): sorting, crowding, reference directions and
hypervolume equal pymoo's; final fronts on ZDT1-3 and DTLZ2 reach pymoo's hypervolume; the repair
search with NSGA keeps one program for new seeds, selections, bounds and data; bad input refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.repair import _nsga, _search

pymoo = pytest.importorskip("pymoo")
from pymoo.algorithms.moo.nsga2 import NSGA2  # noqa: E402
from pymoo.algorithms.moo.nsga3 import NSGA3  # noqa: E402
from pymoo.indicators.hv import HV  # noqa: E402
from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function  # noqa: E402
from pymoo.optimize import minimize  # noqa: E402
from pymoo.problems import get_problem  # noqa: E402
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting  # noqa: E402
from pymoo.util.ref_dirs import get_reference_directions  # noqa: E402


@pytest.mark.parametrize("m,p", [(2, 5), (2, 63), (3, 4), (3, 9), (4, 3)])
def test_reference_directions_equal_pymoo(m, p):
    np.testing.assert_allclose(jr.repair.reference_directions(m, p),
                               get_reference_directions("das-dennis", m, n_partitions=p), atol=1e-12)


def _populations():
    rng = np.random.default_rng(0)
    for t in range(24):
        m = 2 + t % 3
        F = rng.random((50, m))
        if t % 4 == 1:
            F[[7, 11]] = F[3]  # duplicates
        if t % 4 == 2:
            F = np.round(F * 5) / 5  # ties in every objective
        yield F.astype(np.float32)


def test_sorting_and_crowding_equal_pymoo_exactly():
    cd = get_crowding_function("cd")
    for F in _populations():
        fronts, want_rank = NonDominatedSorting().do(F.astype(np.float64), return_rank=True)
        rank = np.asarray(_nsga.ranks(jnp.asarray(F)))
        np.testing.assert_array_equal(rank, want_rank)
        want = np.zeros(len(F))
        for fr in fronts:
            want[fr] = cd.do(F[fr].astype(np.float64))
        got = np.asarray(_nsga.crowding(jnp.asarray(F), jnp.asarray(rank)))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-5, atol=1e-6)


def test_constrained_domination():
    F = jnp.asarray([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [2.0, 2.0], [0.2, 0.9]])
    cv = jnp.asarray([0.3, 0.0, 0.1, 0.0, 0.0])
    # the feasible first, by Pareto fronts ((0.2, 0.9) < (1, 1) < (2, 2)), then the infeasible by violation
    np.testing.assert_array_equal(np.asarray(_nsga.ranks(F, cv)), [4, 1, 3, 2, 0])


def test_hypervolume_equals_pymoo():
    for F in _populations():
        if F.shape[1] > 3:
            continue
        ref = np.full(F.shape[1], 1.1)
        assert jr.repair.hypervolume(F, ref) == pytest.approx(HV(ref_point=ref)(F.astype(np.float64)), rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="one value per objective"):
        jr.repair.hypervolume(np.zeros((3, 2)), [1.0, 1.0, 1.0])


PROBLEMS = _nsga.TEST_PROBLEMS
POP, GEN, SEEDS = 64, 100, range(5)


@pytest.mark.parametrize("algorithm", ["nsga2", "nsga3"])
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_final_front_reaches_pymoo_hypervolume(algorithm, name):
    """Same population, generations and problem; the median hypervolume over 5 seeds is at least
    98% of pymoo's median over 5 seeds (reference point 1.1 in every objective)."""
    fn, n_var, m = PROBLEMS[name]
    algo = jr.repair.NSGA(algorithm, POP)
    run = jax.jit(jax.vmap(lambda k: jr.repair.nsga(fn, k, n_var=n_var, n_obj=m, generations=GEN, algo=algo)))
    final = run(jnp.stack([jax.random.key(s) for s in SEEDS]))
    ref = np.full(m, 1.1)
    ours = [jr.repair.hypervolume(np.asarray(final.F[i])[np.asarray(final.rank[i]) == 0], ref) for i in range(len(SEEDS))]
    theirs = []
    for s in SEEDS:
        if algorithm == "nsga2":
            a = NSGA2(pop_size=POP)
        else:
            a = NSGA3(ref_dirs=algo.directions(m), pop_size=POP)
        theirs.append(HV(ref_point=ref)(minimize(get_problem(name), a, ("n_gen", GEN), seed=s, verbose=False).F))
    assert np.median(ours) >= 0.98 * np.median(theirs), (ours, theirs)


# --------------------------------------------------------------------------- the repair search


def test_nsga_repair_one_program_and_a_front_chosen_on_select():
    from tests.test_problem import _task
    from tests.test_repair import _planted_splits

    model, splits = _planted_splits()
    task = _task(splits)
    strat = jr.repair.get_strategy("nsga2", generations=6, population_size=8)
    problem = jr.repair.prepare(model, task, [("layer1", 0)], k_max=3, sites=["layer1"], strategy=strat)
    out = problem.search(seeds=0, a=0.3, max_drop=0.05)
    traces = _search.TRACE_COUNT["search"]
    for sel, seed, b in [([("layer1", 3)], 1, (0.0, 2.0)), ([("layer1", 1), ("layer1", 2)], 2, (-1.0, 3.0))]:
        problem.search(seeds=seed, a=0.5, max_drop=0.02, bounds=b, selections=[sel])
    shuffled = {k: {kk: np.roll(np.asarray(vv), 5, axis=0) for kk, vv in v.items()} for k, v in splits.items()}
    jr.repair.prepare(model, _task(shuffled), [("layer1", 1)], k_max=3, sites=["layer1"], strategy=strat).search(seeds=3)
    assert _search.TRACE_COUNT["search"] == traces

    front = out["front"]
    assert front["objectives"].shape == (1, 8, 2) and front["solution"].shape == (1, 8, 3)
    # the objectives are the select-split and repair-split metrics of those solutions
    acc0 = jr.repair.metrics(task.objective, model, task.data["select"])[1]
    for i in range(8):
        m = problem.model_for({"solution": front["solution"][0], "slots": [problem.slots] * 8}, i)
        v, acc = jr.repair.metrics(task.objective, m, task.data["select"])
        assert front["select_objectives"][0, i, 0] == pytest.approx(v, abs=1e-6)
        assert front["select_objectives"][0, i, 1] == pytest.approx(acc0 - acc, abs=1e-6)
    # the solution returned is the front's (or the unrepaired network's) best select fitness
    f = (1 - 0.3) * front["select_violation"][0] + 0.3 * (1 - front["select_accuracy"][0])
    f = f + _search.BUDGET_PENALTY * np.maximum(0.0, acc0 - front["select_accuracy"][0] - 0.05)
    assert out["select_fitness"][0] <= f.min() + 1e-6 and out["select_fitness"][0] <= out["identity_select_fitness"][0]
    # the same seed gives the same numbers
    again = problem.search(seeds=0, a=0.3, max_drop=0.05)
    np.testing.assert_array_equal(again["front"]["objectives"], front["objectives"])


def test_nsga_bad_input_refused_before_work():
    with pytest.raises(ValueError, match="unknown objective"):
        jr.repair.get_strategy("nsga2", objectives=("violation", "fairness"))
    with pytest.raises(ValueError, match="at least two distinct"):
        jr.repair.get_strategy("nsga3", objectives=("violation",))
    with pytest.raises(ValueError, match="reference directions"):
        jr.repair.get_strategy("nsga3", population_size=8, settings={"partitions": 12})
    with pytest.raises(ValueError, match="no setting"):
        jr.repair.get_strategy("nsga2", settings={"sigma_init": 1.0})
    with pytest.raises(ValueError, match="even population"):
        jr.repair.get_strategy("nsga2", population_size=7)
    with pytest.raises(ValueError, match="same objective"):
        jr.repair.get_strategy("nsga2", objectives=("violation", "accuracy_loss", "drawdown"))
    from tests.test_problem import _task
    from tests.test_repair import _planted_splits

    model, splits = _planted_splits()
    with pytest.raises(ValueError, match="drawdown objective"):
        jr.repair.plan(model, _task(splits), strategy="nsga2", objectives=("violation", "drawdown"), k=1)
    with pytest.raises(ValueError, match="one scalar fitness"):
        jr.repair.plan(model, _task(splits), strategy="pso", objectives=("violation", "changed"), k=1)


# --------------------------------------------------------------------------- fronts


@pytest.fixture(scope="module")
def planted():
    from tests.test_problem import _task
    from tests.test_repair import _planted_splits

    model, splits = _planted_splits()
    return model, _task(splits)


def test_finetune_grid_equals_finetune_run_by_run(planted):
    model, task = planted
    neurons = [jr.causal.Neuron("layer1", 0, 1.0), jr.causal.Neuron("layer1", 2, 0.5)]
    masks = [jr.repair.weight_mask(model, neurons[:1]), jr.repair.weight_mask(model, neurons)]
    kw = dict(steps=20, eval_every=5, learning_rate=1e-2, max_drop=0.05)
    grid = jr.repair._repair.finetune_grid(model, task, masks, (0.1, 0.6), **kw)
    for i, (ns, a) in enumerate([(neurons[:1], 0.1), (neurons[:1], 0.6), (neurons, 0.1), (neurons, 0.6)]):
        one = jr.repair.finetune(model, task, neurons=ns, a=a, **kw).model.params()
        for leaf_grid, leaf_one in zip(jax.tree.leaves(grid[i]), jax.tree.leaves(one)):
            np.testing.assert_allclose(leaf_grid, leaf_one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method,opts", [("nsga2", {"generations": 5, "population_size": 8, "k": 2}),
                                         ("ace-pso", {"generations": 5, "population_size": 6, "k": 2}),
                                         ("ace-finetune", {"steps": 10, "eval_every": 5, "k_values": (1, 2)})])
def test_pareto_of_a_method(planted, method, opts):
    model, task = planted
    fr = jr.repair.pareto(model, task, method=method, a_values=(0.2, 0.8), seeds=(0, 1), **opts)
    pts = fr["points"]
    assert fr["method"] == method and pts and all(p["seed"] in (0, 1) for p in pts)
    if method == "ace-finetune":
        assert len(pts) == 2 * 2 * 2 and {p["k"] for p in pts} == {1, 2}
    # the front is the select split's non-dominated set
    sel = np.asarray([[p["select_violation"], -p["select_accuracy"]] for p in pts])
    assert fr["front"] == list(np.flatnonzero(jr.repair.non_dominated_mask(sel)))
    # its hypervolume on test, against the reference point, equals pymoo's
    v0, acc0 = fr["before_test"]["violation"], fr["before_test"]["accuracy"]
    assert fr["reference"] == [pytest.approx(v0), pytest.approx(jr.repair._repair.REFERENCE_LOSS)]
    test = np.asarray([[pts[i]["test_violation"], acc0 - pts[i]["test_accuracy"]] for i in fr["front"]])
    assert fr["hypervolume"] == pytest.approx(HV(ref_point=np.asarray(fr["reference"]))(test), abs=1e-9)
    # the chosen point: the lowest select violation within the budget among the front
    if fr["chosen"] is not None:
        c = pts[fr["chosen"]]
        budget = jr.repair.preset_for(task.kind).max_drop  # the custom preset: none
        ok = [i for i in fr["front"] if budget is None or pts[i]["select_accuracy"] >= fr["before_select_accuracy"] - budget]
        assert fr["chosen"] == min(ok, key=lambda i: (pts[i]["select_violation"], -pts[i]["select_accuracy"]))
        assert fr["chosen_test"]["violation"] == c["test_violation"]


def test_pareto_bad_input(planted):
    model, task = planted
    with pytest.raises(ValueError, match="does not dominate the nadir"):
        jr.repair.pareto(model, task, method="nsga2", reference=(0.0, 0.01), generations=2, population_size=8, k=1)
    with pytest.raises(ValueError, match="has no front"):
        jr.repair.pareto(model, task, method="prune")
    with pytest.raises(ValueError, match="takes no option"):
        jr.repair.pareto(model, task, method="nsga2", steps=3)
    with pytest.raises(ValueError, match="unknown pareto option"):
        jr.repair.pareto(model, task, steps=3)


def test_repair_command_draws_a_method_front(tmp_path):
    import json

    from jaxrepair.cli import main

    out = tmp_path / "out"
    assert main(["repair", "german-sex", "--method", "nsga2", "--pareto", "0.5", "--generations", "2",
                 "--population", "8", "--k", "2", "--out", str(out)]) == 0
    rec = json.loads(next(out.rglob("pareto.json")).read_text())
    assert rec["method"] == "nsga2" and 0.0 <= rec["hypervolume_share"] and rec["front"]
    assert "Hypervolume" in next(out.rglob("pareto.md")).read_text()
    out2 = tmp_path / "out2"
    assert main(["repair", "german-sex", "--strategy", "nsga3", "--objectives", "violation,accuracy_loss,changed",
                 "--generations", "2", "--population", "16", "--k", "2", "--out", str(out2)]) == 0
    rec = json.loads(next(out2.rglob("repair.json")).read_text())
    assert rec["config"]["strategy"]["objectives"] == ["violation", "accuracy_loss", "changed"]


@pytest.mark.parametrize("space", ["factor", "delta"])
def test_changed_objective_counts_the_selected_units_moved(planted, space):
    model, task = planted
    strat = jr.repair.get_strategy("nsga2", generations=3, population_size=8,
                                   objectives=("violation", "accuracy_loss", "changed"))
    problem = jr.repair.prepare(model, task, [("layer1", 0), ("layer1", 2)], k_max=3, sites=["layer1"],
                                strategy=strat, space=space)
    out = problem.search(seeds=0)
    sol, changed = out["front"]["solution"][0], out["front"]["objectives"][0][:, 2]
    lo, hi = problem.space.bounds(problem.args.params, problem.slots, problem.bounds)
    ident = np.asarray(problem.space.identity())
    width = np.where(hi > lo, hi - lo, 1.0)
    per = problem.space.slot_dims
    for x, c in zip(sol, changed):
        moved = ((np.abs(x - ident) / width > _search.CHANGED_TOL) & (hi > lo)).reshape(-1, per).any(axis=1)
        assert c == pytest.approx(moved.sum() / 2)  # two of the three slots hold a unit


def test_the_suite_runs_the_multi_objective_methods(tmp_path):
    tiny = {"generations": 2, "population_size": 8, "k": 2}
    names = ["nsga2", "nsga3", "ccbr", "random-ccbr"]
    res = jr.suite.run("fairness", tmp_path, methods=names, seeds=2, entries=["german-sex"], repair_samples=300,
                       options={n: tiny for n in names}, progress=False)
    assert res["ran"] == 8
    rows = {r["method"]: r for r in res["report"]["board"]["rows"]}
    assert set(rows) == set(names) and all(rows[n]["seeds"] == 2 for n in names)
    md = (tmp_path / "suite_fairness.md").read_text()
    assert "ccbr" in md and "random-ccbr" in md
