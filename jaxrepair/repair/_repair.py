"""``jr.repair``: localise with ACE, search a repair of the top-k neurons, fold it, report on test.

Also the baselines that show whether the causal part matters — random selection with the same
search, pruning the top-k, and optax fine-tuning (all weights, or masked to the selected neurons) —
and the Pareto front of the accuracy/violation trade-off from one vmapped program.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrepair import models
from jaxrepair.causal import Neuron
from jaxrepair.repair import _search
from jaxrepair.repair._front import check_front_reference, summarise
from jaxrepair.repair._plan import FROM_PRESET, PLAN_OPTIONS, _count, _resolve, plan
from jaxrepair.repair._problem import prepare, problem_data
from jaxrepair.repair._result import RepairResult, repaired_model
from jaxrepair.repair._space import chain_up, dense_consumers, group
from jaxrepair.repair._task import Task, degeneracy, metrics


def repair(model: models.Network, task: Task, *, seed: int = 0, progress: bool = False, certify: bool = False,
           certify_rounds: int = 4, verify_timeout: float = 60.0, certify_bound_steps: int = 150,
           **options) -> RepairResult:
    """Localises (ACE, or interchange interventions with ``localizer="interchange"``), searches a repair
    of the top-``k`` neurons and reports test metrics: :func:`jaxrepair.repair.plan` with ``options``
    (``preset``, ``k``, ``score``, ``sites``, ``selection``, ``space``, ``bounds``, ``strategy``,
    ``generations``, ``population_size``, ``a``, ``max_drop``, ``num_values``, ``localization``,
    ``localizer``, ``devices``; documented there), then one search for ``seed``.

    With no options this does what ``jaxrepair repair`` does: the preset of ``task.kind``
    (``jr.repair.PRESETS``), whose name and values are recorded in ``result.config``.

    ``certify``: repair ⇄ verify until the task's property is proven (``certify_rounds`` rounds,
    ``verify_timeout`` seconds of verification each, ``certify_bound_steps`` steps of training on the
    bounds of the boxes a round leaves open; :func:`certified_repair`).
    """
    unknown = sorted(set(options) - set(PLAN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown repair option(s) {unknown}; the options are {sorted(PLAN_OPTIONS)}")
    if certify:
        from jaxrepair.repair._certified import certified_repair

        return certified_repair(model, task, rounds=certify_rounds, verify_timeout=verify_timeout, progress=progress,
                                bound_steps=certify_bound_steps, seed=seed, **options)
    pl = plan(model, task, seed=seed, progress=progress, **options)
    t = time.perf_counter()
    out = pl.search(progress=progress)
    return pl.result(out, 0, timings={"search": time.perf_counter() - t})


# --------------------------------------------------------------------------- baselines


def prune(model, task: Task, neurons: list[Neuron]) -> RepairResult:
    """Zeroes the given neurons (channels on conv sites); no search."""
    t = time.perf_counter()
    sites = list(dict.fromkeys(n.site for n in neurons))
    problem = prepare(model, task, neurons, sites=sites, bounds=(0.0, 1.0))
    record = {"task": task.name, "method": "prune", "selected": [(n.site, n.unit) for n in neurons]}
    out = {"solution": np.zeros((1, problem.space.num_dims), np.float32), "slots": [problem.slots]}
    repaired = problem.model_for(out, 0, record)
    before, after = task.report(model), task.report(repaired)
    return RepairResult(task.name, "prune", repaired, list(neurons), {}, before, after, {},
                        {"report": time.perf_counter() - t}, {"k": len(neurons)})


def weight_mask(model, neurons) -> dict:
    """Boolean pytree over the trainable params: the selected neurons' incoming weights and biases
    (channels of conv/batchnorm producers) and their outgoing weights (dense consumers)."""
    _, params, _ = models.split(model)
    g = model.graph
    mask = jax.tree.map(lambda v: np.zeros(np.shape(v), bool), params)
    for n in group([(n.site, n.unit) for n in neurons], models.sites(model)):
        u = list(n.units)
        if len(n.shape) != 1 and not n.per_channel:
            raise ValueError(f"masked fine-tuning needs flat or per-channel sites, not {n.site!r}")
        prod, _ = chain_up(g, n.site)
        if prod is not None and prod.op in ("dense", "conv2d"):
            mask[prod.name]["kernel"][..., u] = True
            if "bias" in mask[prod.name]:
                mask[prod.name]["bias"][u] = True
        elif prod is not None and prod.op == "batchnorm":
            mask[prod.name]["scale"][u] = True
            mask[prod.name]["bias"][u] = True
        for c in (dense_consumers(g, n.site) or ()) if len(n.shape) == 1 else ():
            mask[c.name]["kernel"][u, :] = True
    return mask


def optimise_with_selection(loss, data, params, stats, data_s, numbers, a, lr, max_drop, *, apply, objective, steps,
                            eval_every, mask=None):
    """Adam on ``loss(p, data, stats, apply, obj, a)`` (trainable parameters only; ``stats`` stay
    fixed) for ``steps`` steps, gradients zeroed outside ``mask``, keeping the checkpoint with the
    best select-split objective (``objective.join(numbers)``, the accuracy budget included).

    ``loss`` must be hashable by value (a frozen dataclass): it is a static argument, so the same
    loss, shapes and objective kind reuse one compiled block. Each block of ``eval_every`` steps and
    its select-split check is one compiled call with the steps unrolled, driven from Python: XLA's CPU
    backend runs convolution gradients inside a loop body (``lax.scan``/``fori_loop``) ~13× slower
    than the same steps unrolled (20 MNIST-CNN steps: 10.1 s scanned, 0.68 s unrolled). Returns
    ``(best params, best select fitness, mean loss per block, select fitness per block)``.
    """
    c = _opt_init(params, stats, data_s, numbers, a, lr, apply=apply, objective=objective)
    losses, sel = [], []
    for _ in range(steps // eval_every):
        c, (value, f) = _opt_block(c, data, stats, mask, data_s, numbers, a, lr, max_drop, loss=loss, apply=apply,
                                   objective=objective, eval_every=eval_every)
        losses.append(value)
        sel.append(f)
    return c["best"], c["best_f"], jnp.stack(losses), jnp.stack(sel)


def _merged(apply, stats):
    return lambda p, x: apply(models.merge(p, stats), x)


@jax.jit(static_argnames=("apply", "objective"))
def _opt_init(params, stats, data_s, numbers, a, lr, *, apply, objective):
    f0, _, acc0 = objective.join(numbers).fitness(_merged(apply, stats), params, data_s, a)
    return dict(p=params, s=optax.adam(lr).init(params), best=params, best_f=f0, acc0=acc0)


@jax.jit(static_argnames=("loss", "apply", "objective", "eval_every"))
def _opt_block(c, data, stats, mask, data_s, numbers, a, lr, max_drop, *, loss, apply, objective, eval_every):
    obj = objective.join(numbers)
    opt = optax.adam(lr)
    p, s = c["p"], c["s"]
    values = []
    for _ in range(eval_every):  # unrolled on purpose (see optimise_with_selection)
        value, g = jax.value_and_grad(loss)(p, data, stats, apply, obj, a)
        if mask is not None:
            g = jax.tree.map(lambda gi, m: jnp.where(m, gi, 0.0), g, mask)
        upd, s = opt.update(g, s, p)
        p = optax.apply_updates(p, upd)
        values.append(value)
    f, _, acc = obj.fitness(_merged(apply, stats), p, data_s, a)
    f = f + _search.BUDGET_PENALTY * jnp.maximum(0.0, c["acc0"] - acc - max_drop)
    better = f < c["best_f"]
    best = jax.tree.map(lambda new, old: jnp.where(better, new, old), p, c["best"])
    return dict(p=p, s=s, best=best, best_f=jnp.minimum(f, c["best_f"]), acc0=c["acc0"]), (jnp.mean(jnp.stack(values)), f)


@jax.jit(static_argnames=("apply", "objective"))
def _opt_init_many(params, stats, data_s, numbers, a, lr, *, apply, objective):
    return jax.vmap(lambda a_: _opt_init(params, stats, data_s, numbers, a_, lr, apply=apply, objective=objective))(a)


@jax.jit(static_argnames=("loss", "apply", "objective", "eval_every"))
def _opt_block_many(c, data, stats, masks, data_s, numbers, a, lr, max_drop, *, loss, apply, objective, eval_every):
    return jax.vmap(lambda c_, m_, a_: _opt_block(c_, data, stats, m_, data_s, numbers, a_, lr, max_drop, loss=loss,
                                                  apply=apply, objective=objective, eval_every=eval_every))(c, masks, a)


@dataclasses.dataclass(frozen=True)
class _SurrogateLoss:
    """The objective's differentiable surrogate on the repair split, plus ``preserve`` × the drift
    of the outputs on its accuracy inputs from the input model's (in units of their spread)."""

    def __call__(self, p, data, stats, apply, obj, a):
        fn = _merged(apply, stats)
        drift = jnp.mean(jnp.square((fn(p, data["x_keep"]) - data["y_keep"]) / data["y_scale"]))
        return obj.surrogate(fn, p, data["repair"], a) + data["preserve"] * drift


@jax.jit(static_argnames=("apply",))
def _outputs(params, x, *, apply):
    return apply(params, x)


def _check_steps(steps, eval_every):
    _count(steps, "steps")
    _count(eval_every, "eval_every")
    if eval_every > steps:
        raise ValueError(f"eval_every ({eval_every}) must not exceed steps ({steps}): the select split is checked "
                         f"every eval_every steps, so fewer steps would never choose a checkpoint")


def _finetune_data(model, task: Task, preserve: float):
    """``(apply, Args, objective static part, loss data)`` of a fine-tuning repair."""
    apply, args, static = problem_data(model, task)
    x_keep = args.data_r["accuracy"]["x"]
    y_keep = _outputs(models.merge(args.params, args.stats), x_keep, apply=apply)  # the input model's outputs
    data = {"repair": args.data_r, "x_keep": x_keep, "y_keep": y_keep, "y_scale": jnp.std(y_keep) + 1e-12,
            "preserve": jnp.float32(preserve)}
    return apply, args, static, data


def finetune_grid(model, task: Task, masks: list, a_values, *, steps: int = 300, learning_rate: float = 1e-3,
                  eval_every: int = 10, max_drop: float | None = None, preserve: float = 0.0) -> list:
    """Fine-tuning for every (mask, a) of ``masks × a_values`` in one vmapped program (what
    :func:`finetune` does for one), each keeping its best select-split checkpoint. Returns the
    repaired params (batch statistics merged), one per grid point, masks outer and ``a`` inner."""
    _check_steps(steps, eval_every)
    apply, args, static, data = _finetune_data(model, task, preserve)
    grid = [(m, float(a)) for m in masks for a in a_values]
    mk = jax.tree.map(lambda *v: jnp.asarray(np.stack(v)), *[g[0] for g in grid])
    av = jnp.asarray([g[1] for g in grid], jnp.float32)
    lr = jnp.float32(learning_rate)
    c = _opt_init_many(args.params, args.stats, args.data_s, args.objective, av, lr, apply=apply, objective=static)
    for _ in range(steps // eval_every):
        c, _ = _opt_block_many(c, data, args.stats, mk, args.data_s, args.objective, av, lr, _search.budget(max_drop),
                               loss=_SurrogateLoss(), apply=apply, objective=static, eval_every=eval_every)
    best = jax.device_get(c["best"])
    return [models.merge(jax.tree.map(lambda v: v[i], best), args.stats) for i in range(len(grid))]


def finetune(model, task: Task, *, neurons: list[Neuron] | None = None, a: float = 0.2, steps: int = 300,
             learning_rate: float = 1e-3, eval_every: int = 10, max_drop: float | None = None,
             preserve: float = 0.0) -> RepairResult:
    """Optax Adam on the objective's differentiable surrogate over the repair split (full batch),
    keeping the checkpoint with the best select-split objective. ``neurons``: only their weights.
    ``preserve``: weight of a drift term, the mean squared change of the outputs on the repair
    split's accuracy inputs (in units of their spread), which keeps decisions away from the defect
    as they were (a cross-entropy alone lets near-tie decisions flip).
    Batch statistics and normalisation constants are never trained."""
    _check_steps(steps, eval_every)
    t = time.perf_counter()
    apply, args, static, data = _finetune_data(model, task, preserve)
    mask = jax.tree.map(lambda v: np.ones(np.shape(v), bool), args.params)
    method = "finetune-all"
    if neurons is not None:
        mask = weight_mask(model, neurons)
        method = "finetune-masked"
    best, best_f, losses, sel_f = optimise_with_selection(
        _SurrogateLoss(), data, args.params, args.stats, args.data_s, args.objective, jnp.float32(a),
        jnp.float32(learning_rate), _search.budget(max_drop), apply=apply, objective=static, steps=steps,
        eval_every=eval_every, mask=mask)
    repaired = repaired_model(model, models.merge(jax.device_get(best), args.stats), {"task": task.name, "method": method})
    dt = time.perf_counter() - t
    before, after = task.report(model), task.report(repaired)
    return RepairResult(task.name, method, repaired, list(neurons or []), {}, before, after,
                        {"select_fitness": float(best_f), "history": {"loss": losses, "select": sel_f}},
                        {"train": dt}, {"a": a, "steps": steps, "learning_rate": learning_rate, "max_drop": max_drop,
                         "preserve": preserve})


def localized_finetune(model, task: Task, ranking: list[Neuron], *, k_values=None, a: float | None = None,
                       max_drop=FROM_PRESET, **kw) -> RepairResult:
    """Gradient repair of the top-``k`` neurons of ``ranking`` (ACE, interchange or random) for each
    ``k`` in ``k_values``; the run with the best select-split objective (budget included) is kept,
    so ``k`` is chosen without looking at the test split. Defaults: the task kind's preset
    (``k_grad``, ``a_grad``, ``max_drop``)."""
    p, cfg = _resolve(task, None, k_grad=k_values, a_grad=a, max_drop=max_drop)
    best = None
    tried = []
    for k in cfg["k_grad"]:
        k = min(_count(k, "k"), len(ranking))
        r = finetune(model, task, neurons=ranking[:k], a=cfg["a_grad"], max_drop=cfg["max_drop"], **kw)
        tried.append({"k": k, "select_fitness": r.search["select_fitness"]})
        if best is None or r.search["select_fitness"] < best.search["select_fitness"] - 1e-12:
            best = r
    best.config = {**best.config, "preset": p.name, "k": len(best.selected), "k_values": list(cfg["k_grad"]),
                   "tried": tried}
    return best


def choose(model, task: Task, results: list[RepairResult], *, max_drop: float = 0.01):
    """The result with the lowest select-split violation among those whose select-split accuracy
    is at most ``max_drop`` below ``model``'s and that are not degenerate on the select split
    (:func:`degeneracy`; the test split is never looked at).

    Returns ``(best or None, [{"method", "select_violation", "select_accuracy", "within_budget", "degenerate"}...])``.
    """
    if not results:
        raise ValueError("choose needs at least one repair result")
    sel = task.data["select"]
    _, acc0 = metrics(task.objective, model, sel)
    rows, best, best_v = [], None, np.inf
    for r in results:
        v, acc = metrics(task.objective, r.model, sel)
        degenerate = degeneracy(r.model, sel["accuracy"], task.objective.decide)["degenerate"]
        ok = acc >= acc0 - max_drop - 1e-12 and not degenerate
        rows.append({"method": r.method, "select_violation": v, "select_accuracy": acc, "within_budget": bool(ok),
                     "degenerate": degenerate})
        if ok and v < best_v:
            best, best_v = r, v
    return best, rows


# --------------------------------------------------------------------------- Pareto front


def _test_point(task: Task, model, *, a, seed, select_violation, select_accuracy, **extra) -> dict:
    v, acc = metrics(task.objective, model, task.data["test"])
    return {"a": a, "seed": seed, "select_violation": float(select_violation), "select_accuracy": float(select_accuracy),
            "test_violation": v, "test_accuracy": acc, **extra}


def search_front(model, task: Task, *, a_values=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9), seeds=(0,), localization=None,
                 progress=False, **options) -> tuple[list, dict]:
    """The points of a search method's front: for a scalar strategy one run per ``a × seed`` (one
    vmapped program per seed); for NSGA-II/III one run per seed, every individual of its final
    population's first front a point (``a`` only picks the run's returned solution). Returns
    ``(points, info)``; :func:`pareto` summarises them."""
    points, info, t = [], {}, time.perf_counter()
    loc = localization
    for s in seeds:
        pl = plan(model, task, seed=int(s), localization=loc, progress=progress, **options)
        loc = loc if loc is not None or pl.selection not in ("ace", "interchange") else pl.localization
        info = {"preset": pl.preset.name, "strategy": pl.strategy.to_json(), "space": pl.settings["space"],
                "selected": [(n.site, n.unit) for n in pl.chosen]}
        if pl.strategy.multi_objective:
            out = pl.search(seeds=int(s), progress=progress)
            fr = out["front"]
            sol = fr["solution"][0]
            pop = {"solution": sol, "slots": [out["slots"][0]] * len(sol)}
            for j in np.flatnonzero(fr["rank"][0] == 0):
                points.append(_test_point(task, pl.problem.model_for(pop, int(j)), a=float("nan"), seed=int(s),
                                          select_violation=fr["select_violation"][0][j],
                                          select_accuracy=fr["select_accuracy"][0][j]))
        else:
            out = pl.search(seeds=[int(s)] * len(a_values), a=[float(x) for x in a_values], progress=progress)
            for i, av in enumerate(a_values):
                points.append(_test_point(task, pl.problem.model_for(out, i), a=float(av), seed=int(s),
                                          select_violation=out["select_violation"][i],
                                          select_accuracy=out["select_accuracy"][i],
                                          generations_run=int(out["generations_run"][i])))
    info["search_s"] = time.perf_counter() - t
    return points, info


def finetune_front(model, task: Task, rankings: list, *, a_values=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9), seeds=(0,),
                   k_values=None, max_drop=FROM_PRESET, **kw) -> tuple[list, dict]:
    """The points of localised fine-tuning: every ``k`` of ``k_values`` (default: the preset's
    grid) × every ``a``, all in one vmapped program per seed, on the top-``k`` of ``rankings[i]``
    (the ranking for ``seeds[i]``; ``None``: every weight). Returns ``(points, info)``."""
    _, cfg = _resolve(task, None, k_grad=k_values, max_drop=max_drop)
    t, points = time.perf_counter(), []
    for s, ranking in zip(seeds, rankings):
        ks = [None] if ranking is None else [min(_count(k, "k"), len(ranking)) for k in cfg["k_grad"]]
        masks = [jax.tree.map(lambda v: np.ones(np.shape(v), bool), models.split(model)[1]) if k is None
                 else weight_mask(model, ranking[:k]) for k in ks]
        params = finetune_grid(model, task, masks, a_values, max_drop=cfg["max_drop"], **kw)
        grid = [(k, float(a)) for k in ks for a in a_values]
        for (k, av), p in zip(grid, params):
            m = model.with_params(p)
            v, acc = metrics(task.objective, m, task.data["select"])
            points.append(_test_point(task, m, a=av, seed=int(s), select_violation=v, select_accuracy=acc, k=k))
    return points, {"k_values": list(cfg["k_grad"]), "max_drop": cfg["max_drop"], "search_s": time.perf_counter() - t}


#: The front's default reference point: the unrepaired violation and this accuracy loss (one point).
REFERENCE_LOSS = 0.01


def pareto(model, task: Task, *, method: str | None = None, a_values=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9), seeds=(0,),
           localization=None, reference=None, progress=False, **options) -> dict:
    """The accuracy/violation trade-off of a repair method, summarised on the select split and
    reported on test.

    ``method``: a registered method with a front (``jr.repair.METHODS[name].front``; the search
    methods — PSO and the other evosax strategies over an ``a`` grid, NSGA-II/III and ``ccbr`` from
    their final populations — and the fine-tuning methods, vmapped over ``k × a``), with its
    ``options``; ``None``: :func:`plan` with ``options`` (the task's preset, ``strategy=`` any).

    ``reference``: the hypervolume's reference point ``(violation, accuracy loss)`` on the test split
    (default: the unrepaired test violation and :data:`REFERENCE_LOSS`); it must bound that nadir.
    Returns every point, the non-dominated ones on select (``front``), their test hypervolume, the
    point chosen on select within the accuracy budget and the accuracy at fixed violation levels."""
    v0, acc0 = metrics(task.objective, model, task.data["test"])
    ref = check_front_reference((v0, REFERENCE_LOSS) if reference is None else reference, v0)
    if method is None:
        unknown = sorted(set(options) - set(PLAN_OPTIONS))
        if unknown:
            raise ValueError(f"unknown pareto option(s) {unknown}; the options are {sorted(PLAN_OPTIONS)}")
        points, info = search_front(model, task, a_values=a_values, seeds=seeds, localization=localization,
                                    progress=progress, **options)
        name, budget = "plan", _resolve(task, options.get("preset"), max_drop=options.get("max_drop", FROM_PRESET))[1]
    else:
        from jaxrepair.repair._methods import get_method

        m = get_method(method)
        if m.front is None:
            raise ValueError(f"method {method!r} has no front (it makes one repair); methods with fronts: "
                             f"{', '.join(n for n, x in _methods_with_fronts())}")
        m.check(task, options)
        points, info = m.front(model, task, a_values=a_values, seeds=seeds, localization=localization,
                               progress=progress, **options)
        name, budget = method, _resolve(task, m.preset, max_drop=options.get("max_drop", FROM_PRESET))[1]
    _, sel_acc0 = metrics(task.objective, model, task.data["select"])
    summary = summarise(points, before_test={"violation": v0, "accuracy": acc0}, select_accuracy0=sel_acc0,
                        reference=ref, max_drop=budget["max_drop"])
    return {"task": task.name, "method": name, "points": points, **summary, **info,
            "before_test": {"violation": v0, "accuracy": acc0}, "before_select_accuracy": sel_acc0}


def _methods_with_fronts():
    from jaxrepair.repair._methods import METHODS

    return [(n, m) for n, m in METHODS.items() if m.front is not None]
