"""``jr.repair``: localise with ACE, search a repair of the top-k neurons, fold it, report on test.

Also the baselines that show whether the causal part matters — random selection with the same
search, pruning the top-k, and optax fine-tuning (all weights, or masked to the selected neurons) —
and the Pareto front of the accuracy/violation trade-off from one vmapped program.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxrepair import causal, models
from jaxrepair.causal._ace import Neuron
from jaxrepair.repair import _search
from jaxrepair.repair._space import DeltaSpace, FactorSpace, Neurons, _chain_up, _dense_consumers, group
from jaxrepair.repair._task import Task
from jaxrepair.zoo._train import trainable_mask


# Per task kind: neurons repaired, factor bounds and objective weight ``a`` used by the CLI, the demo
# and the experiments. CARE repaired 3 neurons for fairness, ~1% of a layer for backdoors and ~half a
# layer for ACAS Xu; on our zoo 3 factors cut census unfairness by only ~36%, so fairness uses 10.
# ``max_drop``: the accuracy budget of the budgeted methods, on the select split (kept below the
# acceptance limits — 1 point for fairness, 2 for backdoors — to leave room for select/test noise);
# ``k_grad``/``a_grad``: neuron counts tried (the best on the select split is kept) and objective
# weight of the gradient repair of localised neurons (:func:`localized_finetune`).
DEFAULTS = {
    "fairness": dict(k=10, bounds=(-1.0, 3.0), a=0.5, max_drop=0.0075, k_grad=(10, 30, 50, 100), a_grad=0.2),
    "backdoor": dict(k=5, bounds=(0.0, 2.0), a=0.5, max_drop=0.015, k_grad=(30,), a_grad=0.2),
    "safety": dict(k=25, bounds=(-1.0, 3.0), a=0.5, max_drop=0.03, k_grad=(50,), a_grad=0.2),
    "custom": dict(k=3, bounds=(0.0, 2.0), a=0.2, max_drop=None, k_grad=(10,), a_grad=0.2),
}


@dataclasses.dataclass
class RepairResult:
    """A repaired model and the record of how it was obtained."""

    task: str
    method: str
    model: models.Network
    selected: list  # [Neuron(site, unit, score)]
    solution: dict  # readable solution pytree (factors or deltas per site); {} for baselines
    before: dict  # test-split metrics of the input model
    after: dict  # test-split metrics of the repaired model
    search: dict  # select-split fitness, generations, evaluations, history
    timings: dict
    config: dict
    localization: object = None

    def summary(self) -> dict:
        """The headline figures (test split)."""
        b, a = self.before, self.after
        out = {"violation_before": b["violation"], "violation_after": a["violation"],
               "accuracy_before": b["accuracy"], "accuracy_after": a["accuracy"],
               "accuracy_drop_points": 100 * (b["accuracy"] - a["accuracy"]),
               "violation_reduction": (1 - a["violation"] / b["violation"]) if b["violation"] > 0 else None}
        if "drawdown" in a:
            out["drawdown"] = a["drawdown"]
        return out

    def to_json(self) -> dict:
        hist = {k: np.asarray(v).tolist() for k, v in self.search.get("history", {}).items()}
        return {
            "task": self.task, "method": self.method, "config": self.config,
            "selected": [{"site": n.site, "unit": n.unit, "score": n.score} for n in self.selected],
            "solution": jax.tree.map(lambda v: np.asarray(v).tolist(), self.solution),
            "before_test": self.before, "after_test": self.after, "summary": self.summary(),
            "search": {**{k: v for k, v in self.search.items() if k != "history"}, "history": hist},
            "timings_s": self.timings,
        }

    def table(self) -> str:
        from jaxrepair.records import markdown_table

        rows = [["violation (test)", self.before["violation"], self.after["violation"]],
                ["accuracy (test)", self.before["accuracy"], self.after["accuracy"]]]
        if "drawdown" in self.after:
            rows.append(["drawdown (test)", 0.0, self.after["drawdown"]])
        rows.append(["time (s)", "", sum(self.timings.values())])
        return markdown_table(["metric", "before", f"after ({self.method})"], rows)


# --------------------------------------------------------------------------- selection


def candidate_sites(model, space: str = "factor") -> list[str]:
    """Hidden post-activation sites a repair of ``space`` can act on (deltas: dense → act → dense)."""
    sites = models.hidden_sites(model)
    if space == "delta":
        g = model.graph
        info = models.sites(model)
        sites = [s for s in sites if len(info[s].shape) == 1 and _dense_consumers(g, s) is not None
                 and (_chain_up(g, s)[0] is not None and _chain_up(g, s)[0].op == "dense")]
    if not sites:
        raise ValueError(f"the model has no hidden site a {space!r} repair can act on")
    return sites


def localize(model, task: Task, *, sites=None, num_values: int = 16, progress: bool = False, devices=None):
    return causal.ace(model, task.localize_batch, task.effect, sites=sites, num_values=num_values, progress=progress,
                      devices=devices)


def interchange_pairs(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """``(x, x')`` pairs for interchange interventions: the localisation batch and its counterfactual
    (fairness: the sensitive attribute moved to its next value; backdoor: the triggered copy)."""
    b = task.localize_batch
    if "x_cf" in b:
        return np.asarray(b["x"]), np.asarray(b["x_cf"])
    if task.kind == "fairness" or hasattr(task.objective.prop, "column"):
        prop = task.objective.prop
        x = np.asarray(b["x"])
        vals = np.asarray(prop.values, np.float32)
        pos = np.argmin(np.abs(x[:, prop.column][:, None] - vals[None]), axis=1)
        x_cf = x.copy()
        x_cf[:, prop.column] = vals[(pos + 1) % len(vals)]
        return x, x_cf
    raise ValueError(f"task {task.name!r} ({task.kind}) has no natural counterfactual pairs for interchange interventions")


def localize_interchange(model, task: Task, *, sites=None, chunk: int = 16):
    """Interchange-intervention localisation (CCBR-style) on the task's counterfactual pairs."""
    x, x_cf = interchange_pairs(task)
    return causal.interchange(model, x, x_cf, sites=sites, chunk=chunk)


def random_selection(model, sites, k: int | None, key) -> list[Neuron]:
    """``k`` distinct units drawn uniformly from all units (channels of conv sites) of ``sites``;
    ``k=None``: all of them, in a random order (its top-k is k random units for every k)."""
    info = models.sites(model)
    pool = [(s, u) for s in sites for u in range(info[s].shape[-1] if len(info[s].shape) == 3 else info[s].num_units)]
    k = len(pool) if k is None else k
    if k > len(pool):
        raise ValueError(f"cannot select {k} of {len(pool)} units")
    idx = np.asarray(jax.random.choice(key, len(pool), (k,), replace=False))
    return [Neuron(pool[i][0], pool[i][1], float("nan")) for i in idx]


def make_space(kind: str, model, neurons: tuple[Neurons, ...], *, bounds=None):
    if kind == "factor":
        lo, hi = bounds or (0.0, 2.0)
        return FactorSpace(neurons, float(lo), float(hi))
    if kind == "delta":
        return DeltaSpace(neurons, model.graph, float(bounds or 1.0))
    raise ValueError(f"unknown repair space {kind!r}; choose 'factor' (CARE) or 'delta'")


# --------------------------------------------------------------------------- repair


def _with_meta(model, params, record: dict) -> models.Network:
    net = model.with_params(params)
    net.meta = {**model.meta, "repair": record}
    return net


def repair(
    model: models.Network,
    task: Task,
    *,
    k: int = 3,
    score: str = causal.DEFAULT_SCORE,
    sites=None,
    selection=None,
    space: str = "factor",
    bounds=None,
    strategy="pso",
    generations: int | None = None,
    population_size: int | None = None,
    a: float = 0.2,
    max_drop: float | None = None,
    seed: int = 0,
    num_values: int = 16,
    localization=None,
    localizer: str = "ace",
    devices=None,
    progress: bool = False,
) -> RepairResult:
    """Localises (ACE, or interchange interventions with ``localizer="interchange"``), searches a repair of the top-``k`` neurons and reports test metrics.

    Args:
      model: the network to repair (any jaxrepair model: built, zoo or converted).
      task: a :class:`Task` (``jr.repair.from_zoo(jr.zoo.load(name))`` or ``custom_task``).
      k: neurons to repair. ``selection``: explicit ``[(site, unit), ...]`` or ``"random"``
        (the ablation: ``k`` random units of the candidate sites) instead of the ACE top-k.
      score: ACE ranking score (``interventional_change``, ``care_mean``, ``care_spread``).
      space: ``"factor"`` (CARE: a factor per neuron in ``bounds``, default (0, 2)) or ``"delta"``
        (incoming/outgoing weight deltas within ``±bounds·std`` of the layer, default 1).
      strategy: ``pso`` (CARE's settings; preset ``care``), ``cma_es``, ``de``, ``snes``, ``open_es``
        or a :class:`Strategy`; ``generations``/``population_size`` override its budget.
      a: weight of ``1 − accuracy`` in CARE's objective ``(1−a)·violation + a·(1−accuracy)``.
      devices: devices the population is sharded over (``None``: all; 1: no sharding); the ACE
        localisation uses the same devices.
      max_drop: accuracy budget (a fraction: 0.01 = one point). Solutions that lose more accuracy
        than this against the unrepaired model are penalised in the search and rejected when the
        result is chosen on the select split; None: no budget (CARE's plain objective).
    """
    task.check()
    if max_drop is not None and not max_drop >= 0:
        raise ValueError(f"max_drop must be a non-negative accuracy fraction, got {max_drop}")
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"a must be in [0, 1], got {a}")
    strat = _search.get_strategy(strategy, generations=generations, population_size=population_size)
    timings = {}
    apply, params = models.functional(model)
    models.check_finite(params, "model params")
    key = jax.random.key(seed)
    cands = list(sites) if sites is not None else candidate_sites(model, space)

    t = time.perf_counter()
    loc = localization
    if isinstance(selection, str) and selection == "random":
        chosen = random_selection(model, cands, k, jax.random.fold_in(key, 7))
        method = f"random-{strat.name}"
    elif selection is not None:
        chosen = [Neuron(s, int(u), float("nan")) for s, u in selection]
        method = f"given-{strat.name}"
    else:
        if localizer not in ("ace", "interchange"):
            raise ValueError(f"localizer must be 'ace' or 'interchange', got {localizer!r}")
        if loc is None:
            if progress:
                print(f"[repair] localising {task.name}: {localizer} over {cands}", file=sys.stderr, flush=True)
            loc = (localize(model, task, sites=cands, num_values=num_values, progress=progress, devices=devices)
                   if localizer == "ace" else localize_interchange(model, task, sites=cands))
        chosen = [n for n in loc.ranking(score) if n.site in cands][:k]
        method = f"{'interchange' if isinstance(loc, causal.Interchange) else 'ace'}-{strat.name}"
    timings["localize"] = time.perf_counter() - t

    neurons = group([(n.site, n.unit) for n in chosen], models.sites(model))
    sp = make_space(space, model, neurons, bounds=bounds)
    t = time.perf_counter()
    if progress:
        print(f"[repair] {strat.name} over {len(chosen)} neurons ({space}, {sp.num_dims if hasattr(sp, 'num_dims') else ''}"
              f" dims), population {strat.population_size}, up to {strat.generations} generations",
              file=sys.stderr, flush=True)
    out = _search.run_search(params, task.data["repair"], task.data["select"], jax.random.fold_in(key, 1), a,
                             apply=apply, space=sp, objective=task.objective, strategy=strat, progress=progress,
                             max_drop=max_drop, mesh=_search.population_mesh(devices))
    out = jax.device_get(out)
    timings["search"] = time.perf_counter() - t

    t = time.perf_counter()
    new_params = sp.fold(model.graph, params, jnp.asarray(out["solution"]))
    config = {"k": k, "score": score, "space": space, "bounds": bounds, "strategy": strat.to_json(), "a": a,
              "max_drop": max_drop, "seed": seed, "num_values": num_values, "candidate_sites": cands, "selection": method}
    record = {"task": task.name, "method": method, "config": config,
              "selected": [(n.site, n.unit) for n in chosen]}
    repaired = _with_meta(model, new_params, record)
    before, after = task.report(model), task.report(repaired)
    timings["report"] = time.perf_counter() - t
    search = {k_: out[k_].item() for k_ in ("select_fitness", "select_violation", "select_accuracy", "repair_best_fitness",
                                            "generations_run", "evaluations", "identity_select_fitness")}
    search["history"] = out["history"]
    return RepairResult(task.name, method, repaired, chosen, sp.unflatten(jnp.asarray(out["solution"]), params),
                        before, after, search, timings, config, loc)


# --------------------------------------------------------------------------- baselines


def prune(model, task: Task, neurons: list[Neuron]) -> RepairResult:
    """Zeroes the given neurons (channels on conv sites); no search."""
    t = time.perf_counter()
    sp = FactorSpace(group([(n.site, n.unit) for n in neurons], models.sites(model)))
    _, params = models.functional(model)
    new = sp.fold(model.graph, params, jnp.zeros(sp.num_dims))
    repaired = _with_meta(model, new, {"task": task.name, "method": "prune", "selected": [(n.site, n.unit) for n in neurons]})
    before, after = task.report(model), task.report(repaired)
    return RepairResult(task.name, "prune", repaired, list(neurons), {}, before, after, {},
                        {"report": time.perf_counter() - t}, {"k": len(neurons)})


def weight_mask(model, neurons: tuple[Neurons, ...]) -> dict:
    """Boolean pytree over params: the selected neurons' incoming weights and biases (channels of
    conv/batchnorm producers) and their outgoing weights (dense consumers)."""
    _, params = models.functional(model)
    g = model.graph
    mask = jax.tree.map(lambda v: np.zeros(np.shape(v), bool), params)
    for n in neurons:
        u = list(n.units)
        if len(n.shape) != 1 and not n.per_channel:
            raise ValueError(f"masked fine-tuning needs flat or per-channel sites, not {n.site!r}")
        prod, _ = _chain_up(g, n.site)
        if prod is not None and prod.op in ("dense", "conv2d"):
            mask[prod.name]["kernel"][..., u] = True
            if "bias" in mask[prod.name]:
                mask[prod.name]["bias"][u] = True
        elif prod is not None and prod.op == "batchnorm":
            mask[prod.name]["scale"][u] = True
            mask[prod.name]["bias"][u] = True
        for c in (_dense_consumers(g, n.site) or ()) if len(n.shape) == 1 else ():
            mask[c.name]["kernel"][u, :] = True
    return mask


def optimise_with_selection(params, loss, data_s, a, lr, max_drop, *, fn, objective, steps, eval_every, mask=None):
    """Adam on ``loss(params)`` for ``steps`` steps (gradients zeroed outside ``mask``), keeping the
    checkpoint with the best select-split objective, the accuracy budget included. Traced inside
    the caller's ``jit``; returns ``(best params, best select fitness, mean loss per block,
    select fitness per block)``."""
    opt = optax.adam(lr)

    def step(c, _):
        p, s = c
        val, g = jax.value_and_grad(loss)(p)
        if mask is not None:
            g = jax.tree.map(lambda gi, m: jnp.where(m, gi, 0.0), g, mask)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), val

    f0, _, acc0 = objective.fitness(fn, params, data_s, a)

    def block(c, _):
        (p, s), losses = lax.scan(step, c["ps"], None, length=eval_every)
        f, _, acc = objective.fitness(fn, p, data_s, a)
        f = f + _search.BUDGET_PENALTY * jnp.maximum(0.0, acc0 - acc - max_drop)
        better = f < c["best_f"]
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), p, c["best"])
        return dict(ps=(p, s), best=best, best_f=jnp.minimum(f, c["best_f"])), (jnp.mean(losses), f)

    c0 = dict(ps=(params, opt.init(params)), best=params, best_f=f0)
    final, (losses, sel) = lax.scan(block, c0, None, length=steps // eval_every)
    return final["best"], final["best_f"], losses, sel


@jax.jit(static_argnames=("apply", "objective", "steps", "eval_every"))
def _finetune(params, mask, data_r, data_s, a, lr, max_drop, *, apply, objective, steps, eval_every):
    fn = lambda p, x: apply(p, x)  # noqa: E731
    return optimise_with_selection(params, lambda p: objective.surrogate(fn, p, data_r, a), data_s, a, lr, max_drop,
                                   fn=fn, objective=objective, steps=steps, eval_every=eval_every, mask=mask)


def finetune(model, task: Task, *, neurons: list[Neuron] | None = None, a: float = 0.2, steps: int = 300,
             learning_rate: float = 1e-3, eval_every: int = 10, max_drop: float | None = None) -> RepairResult:
    """Optax Adam on the objective's differentiable surrogate over the repair split (full batch),
    keeping the checkpoint with the best select-split objective. ``neurons``: only their weights."""
    t = time.perf_counter()
    apply, params = models.functional(model)
    mask = trainable_mask(params)
    mask = {n: {k: np.full(np.shape(params[n][k]), m, bool) for k, m in p.items()} for n, p in mask.items()}
    method = "finetune-all"
    if neurons is not None:
        sel = weight_mask(model, group([(n.site, n.unit) for n in neurons], models.sites(model)))
        mask = jax.tree.map(lambda x, y: x & y, mask, sel)
        method = "finetune-masked"
    best, best_f, losses, sel_f = _finetune(params, mask, task.data["repair"], task.data["select"], jnp.float32(a),
                                            jnp.float32(learning_rate), _search._budget(max_drop), apply=apply, objective=task.objective,
                                            steps=steps, eval_every=eval_every)
    best = jax.device_get(best)
    repaired = _with_meta(model, best, {"task": task.name, "method": method})
    dt = time.perf_counter() - t
    before, after = task.report(model), task.report(repaired)
    return RepairResult(task.name, method, repaired, list(neurons or []), {}, before, after,
                        {"select_fitness": float(best_f), "history": {"loss": losses, "select": sel_f}},
                        {"train": dt}, {"a": a, "steps": steps, "learning_rate": learning_rate, "max_drop": max_drop})


def localized_finetune(model, task: Task, ranking: list[Neuron], *, k_values=(10, 30, 50, 100), a: float = 0.2,
                       max_drop: float | None = None, **kw) -> RepairResult:
    """Gradient repair of the top-``k`` neurons of ``ranking`` (ACE, interchange or random) for each
    ``k`` in ``k_values``; the run with the best select-split objective (budget included) is kept,
    so ``k`` is chosen without looking at the test split."""
    best = None
    tried = []
    for k in k_values:
        k = min(int(k), len(ranking))
        r = finetune(model, task, neurons=ranking[:k], a=a, max_drop=max_drop, **kw)
        tried.append({"k": k, "select_fitness": r.search["select_fitness"]})
        if best is None or r.search["select_fitness"] < best.search["select_fitness"] - 1e-12:
            best = r
    best.config = {**best.config, "k": len(best.selected), "k_values": list(k_values), "tried": tried}
    return best


# --------------------------------------------------------------------------- Pareto front


def pareto(model, task: Task, *, a_values=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9), seeds=(0,), k: int = 3,
           score: str = causal.DEFAULT_SCORE, sites=None, space: str = "factor", bounds=None, strategy="pso",
           generations=None, population_size=None, localization=None, num_values: int = 16, progress=False,
           max_drop: float | None = None, devices=None) -> dict:
    """The accuracy/violation trade-off: the whole repair vmapped over ``a_values × seeds`` in one
    compiled program. Returns every point (select and test metrics) and the non-dominated set
    (chosen on the select split; its test metrics are reported)."""
    task.check()
    strat = _search.get_strategy(strategy, generations=generations, population_size=population_size)
    apply, params = models.functional(model)
    cands = list(sites) if sites is not None else candidate_sites(model, space)
    loc = localization or localize(model, task, sites=cands, num_values=num_values, progress=progress, devices=devices)
    chosen = [n for n in loc.ranking(score) if n.site in cands][:k]
    sp = make_space(space, model, group([(n.site, n.unit) for n in chosen], models.sites(model)), bounds=bounds)
    grid = [(float(av), int(s)) for s in seeds for av in a_values]
    keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 1) for _, s in grid])
    t = time.perf_counter()
    out = jax.device_get(_search.run_pareto(params, task.data["repair"], task.data["select"], keys,
                                            [g[0] for g in grid], apply=apply, space=sp, objective=task.objective,
                                            strategy=strat, progress=progress, max_drop=max_drop,
                                            mesh=_search.population_mesh(devices)))
    search_s = time.perf_counter() - t
    points = []
    for i, (av, s) in enumerate(grid):
        new = sp.fold(model.graph, params, jnp.asarray(out["solution"][i]))
        ap, pp = models.functional(model.with_params(new))
        v, acc = task.objective.metrics(ap, pp, task.data["test"])
        points.append({"a": av, "seed": s, "select_violation": float(out["select_violation"][i]),
                       "select_accuracy": float(out["select_accuracy"][i]),
                       "test_violation": float(v), "test_accuracy": float(acc),
                       "generations_run": int(out["generations_run"][i])})
    front = _search.non_dominated([p["select_accuracy"] for p in points], [p["select_violation"] for p in points])
    ab, pb = models.functional(model)
    v0, acc0 = task.objective.metrics(ab, pb, task.data["test"])
    return {"task": task.name, "points": points, "front": front, "search_s": search_s,
            "selected": [(n.site, n.unit) for n in chosen], "strategy": strat.to_json(), "space": space,
            "before_test": {"violation": float(v0), "accuracy": float(acc0)}}
