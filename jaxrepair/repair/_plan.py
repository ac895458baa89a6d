"""Planning a repair: the one pipeline that every caller of the factor/delta search shares.

:func:`plan` resolves the task kind's preset with the caller's overrides, checks them, localises
(ACE, interchange interventions, or a random draw), takes the top-``k`` units of the candidate
sites and prepares the :class:`~jaxrepair.repair.Problem`. The resulting :class:`Plan` runs the
search for one seed (``jr.repair``), for a grid of ``a`` values and seeds (``jr.repair.pareto``) or for
a group of sweep cells with other selections of the same ranking (``jaxrepair sweep``), and turns
each run into the same :class:`RepairResult` — so a sweep cell and ``jr.repair`` with the same
options compute the same numbers (``tests/test_methods.py`` asserts it).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import time

import jax
import numpy as np

from jaxrepair import causal, models, properties
from jaxrepair.causal import Neuron
from jaxrepair.repair import _search
from jaxrepair.repair._presets import Preset, preset_for
from jaxrepair.repair._problem import Problem, candidate_sites, prepare
from jaxrepair.repair._result import RepairResult
from jaxrepair.repair._task import Task

#: ``repair(..., max_drop=FROM_PRESET)``: the accuracy budget of the preset (None there means no budget).
FROM_PRESET = "preset"


def _count(k, what: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{what} must be a positive integer, got {k!r}")
    return int(k)


def _resolve(task: Task, preset: str | None, **given) -> tuple[Preset, dict]:
    """The preset of the task (or the named one) with the caller's explicit values on top."""
    p = preset_for(task.kind, preset)
    values = {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name != "name"}
    for k, v in given.items():
        if k == "max_drop":
            if v != FROM_PRESET:
                values[k] = v
        elif v is not None:
            values[k] = v
    # checked before any work starts
    if "a" in values and not 0.0 <= float(values["a"]) <= 1.0:
        raise ValueError(f"a must be in [0, 1], got {values['a']}")
    md = values.get("max_drop")
    if md is not None and not (isinstance(md, (int, float)) and md >= 0):
        raise ValueError(f"max_drop must be a non-negative accuracy fraction (0.01 = one point) or None, got {md!r}")
    if "k" in given and given["k"] is not None:
        _count(given["k"], "k")
    return p, values


# --------------------------------------------------------------------------- selection


def localization_effect(task: Task, preset: Preset):
    """The effect ACE localises on: the task's own, or CARE's for the ``care`` preset — fairness: the
    sensitive attribute's effect on the class-0 raw output; backdoor: the trigger's effect on the
    target class's raw output (CARE measures the target label's output on triggered inputs); a
    spurious feature: the size of the raw-output change when only that feature changes."""
    if preset.effect == "care":
        if isinstance(task.effect, causal.Fairness):
            return dataclasses.replace(task.effect, target=0, output="logit")
        if isinstance(task.effect, causal.CounterfactualPair) and task.kind in ("backdoor", "spurious"):
            return dataclasses.replace(task.effect, output="logit")
        raise ValueError(f"the 'care' preset localises with CARE's fairness or backdoor effect; task {task.name!r} "
                         f"({task.kind}) localises on {causal.describe(task.effect)}")
    return task.effect


def localize(model, task: Task, *, sites=None, num_values: int = 16, progress: bool = False, devices=None, effect=None):
    """ACE of every unit of ``sites`` (default: the post-activation candidates) on the task's effect."""
    sites = list(sites) if sites is not None else candidate_sites(model)
    return causal.ace(model, task.localize_batch, effect or task.effect, sites=sites, num_values=num_values,
                      progress=progress, devices=devices)


def interchange_pairs(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """``(x, x')`` pairs for interchange interventions: the localisation batch and its counterfactual
    (fairness: the sensitive attribute moved to its next value; backdoor: the triggered copy)."""
    b = task.localize_batch
    if "x_cf" in b:
        return np.asarray(b["x"]), np.asarray(b["x_cf"])
    prop = task.objective.prop
    if isinstance(prop, properties.IndividualFairness):
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
    pool = [(s, u) for s in sites for u in range(info[s].units)]
    k = len(pool) if k is None else k
    if not 1 <= k <= len(pool):
        raise ValueError(f"cannot select {k} of {len(pool)} units")
    idx = np.asarray(jax.random.choice(key, len(pool), (k,), replace=False))
    return [Neuron(pool[i][0], pool[i][1], float("nan")) for i in idx]


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass
class Plan:
    """A repair ready to search: the resolved settings, the ranking, the chosen units and the
    prepared :class:`Problem`. :meth:`search` runs it (one compiled program for any number of
    seeds, ``a`` values and selections of up to ``k_max`` units); :meth:`result` reports run ``i``."""

    model: models.Network
    task: Task
    preset: Preset
    settings: dict  # the preset's values with the caller's overrides (checked)
    strategy: _search.Strategy
    candidates: list  # [site]
    ranking: list  # [Neuron], best first (ACE / interchange), or the random draw
    chosen: list  # [Neuron]: the first k of the ranking
    localization: object  # causal.Localization | causal.Interchange | None (random or given units)
    selection: str  # "ace" | "interchange" | "random" | "given"
    problem: Problem
    seed: int
    num_values: int
    timings: dict

    @property
    def method(self) -> str:
        return f"{self.selection}-{self.strategy.name}"

    def search(self, *, seeds=None, a=None, selections=None, progress: bool = False) -> dict:
        """:meth:`Problem.search` with the plan's accuracy budget; ``seeds`` (default: the plan's)
        and ``a`` (default: the preset's) are one value or a list with one per run."""
        seeds = self.seed if seeds is None else seeds
        a = self.settings["a"] if a is None else a
        if progress:
            print(f"[repair] {self.strategy.name} over {len(self.chosen)} neurons ({self.settings['space']}, "
                  f"{self.problem.space.num_dims} dims), population {self.strategy.population_size}, up to "
                  f"{self.strategy.generations} generations", file=sys.stderr, flush=True)
        return self.problem.search(seeds=seeds, a=a, max_drop=self.settings["max_drop"], selections=selections,
                                   progress=progress)

    def config(self, *, seed: int, a: float, k: int) -> dict:
        s = self.settings
        return {"preset": self.preset.name, "k": k, "score": s["score"], "space": s["space"], "bounds": s["bounds"],
                "strategy": self.strategy.to_json(), "a": a, "max_drop": s["max_drop"], "init": s["init"],
                "seed": seed, "num_values": self.num_values, "candidate_sites": self.candidates,
                "selection": self.method}

    def result(self, out: dict, i: int = 0, *, seed: int | None = None, a: float | None = None, chosen=None,
               timings: dict | None = None, before: dict | None = None) -> RepairResult:
        """Run ``i`` of a :meth:`search` output as a :class:`RepairResult` (test-split report).
        ``seed``, ``a`` and ``chosen`` say what that run used (default: the plan's); ``before``: the
        input model's report, when the caller has it already."""
        seed = self.seed if seed is None else seed
        a = self.settings["a"] if a is None else a
        chosen = self.chosen if chosen is None else list(chosen)
        t = time.perf_counter()
        config = self.config(seed=seed, a=a, k=len(chosen))
        record = {"task": self.task.name, "method": self.method, "config": config,
                  "selected": [(n.site, n.unit) for n in chosen]}
        repaired = self.problem.model_for(out, i, record)
        before = self.task.report(self.model) if before is None else before
        after = self.task.report(repaired)
        times = {**self.timings, **(timings or {}), "report": time.perf_counter() - t}
        search = {k_: np.asarray(out[k_][i]).item() for k_ in ("select_fitness", "select_violation", "select_accuracy",
                                                               "repair_best_fitness", "generations_run", "evaluations",
                                                               "identity_select_fitness")}
        search["history"] = {k_: v[i] for k_, v in out["history"].items()}
        return RepairResult(self.task.name, self.method, repaired, chosen, self.problem.readable(out, i), before, after,
                            search, times, config, self.localization)


def plan(
    model: models.Network,
    task: Task,
    *,
    preset: str | None = None,
    k: int | None = None,
    k_max: int | None = None,
    score: str | None = None,
    sites=None,
    selection=None,
    space: str | None = None,
    bounds=None,
    strategy=None,
    generations: int | None = None,
    population_size: int | None = None,
    objectives=None,
    a: float | None = None,
    max_drop=FROM_PRESET,
    seed: int = 0,
    num_values: int = 16,
    localization=None,
    localizer: str | None = None,
    devices=None,
    progress: bool = False,
) -> Plan:
    """Plans the search repair of ``model`` on ``task`` (what :func:`jaxrepair.repair.repair` runs).
    Every option is checked before any work starts.

    Args:
      model: the network to repair (any jaxrepair model: built, zoo or converted).
      task: a :class:`Task` (``jr.repair.from_zoo(jr.zoo.load(name))`` or ``custom_task``).
      preset: a preset name (``fairness``, ``backdoor``, ``safety``, ``custom``, ``care``); default:
        the task's kind. Every option below overrides the preset's value.
      k: neurons to repair. ``selection``: explicit ``[(site, unit), ...]`` or ``"random"``
        (the ablation: ``k`` random units of the candidate sites) instead of the ACE top-k.
      score: ACE ranking score (``interventional_change``, ``care_mean``, ``care_spread``).
      sites: candidate sites (default: the preset's site kind: post-activation, or CARE's
        pre-activation Linear outputs).
      space: ``"factor"`` (CARE: a factor per neuron within ``bounds``) or ``"delta"``
        (incoming/outgoing weight deltas within ``±bounds·std`` of the layer).
      strategy: ``care`` (pyswarms' PSO as CARE runs it), ``pso`` (evosax, CARE's coefficients),
        ``cma_es``, ``de``, ``snes``, ``open_es``, ``nsga2``, ``nsga3`` or a :class:`Strategy`;
        ``generations`` and ``population_size`` override its budget.
      objectives: what NSGA-II/III minimise (``jr.repair.OBJECTIVES``; default violation and
        accuracy loss; ``drawdown`` only for safety tasks, whose accuracy is the drawdown set's).
      a: weight of ``1 − accuracy`` in CARE's objective ``(1−a)·violation + a·(1−accuracy)``.
      max_drop: accuracy budget (a fraction: 0.01 = one point), penalised in the search and
        enforced when the result is chosen on the select split; ``None``: no budget.
      devices: devices the population is sharded over (``None``: all; 1: no sharding); the ACE
        localisation uses the same devices.
      k_max: slots of the prepared problem (default ``k``): selections of up to ``k_max`` units of
        the ranking reuse one compiled search.
      seed: the search's seed (and the random selection's).
      num_values: intervention values per unit for ACE; ``localization``: a ranking computed
        already (ACE or interchange); ``localizer``: ``"ace"`` or ``"interchange"`` (default: the
        preset's).
    """
    p, cfg = _resolve(task, preset, k=k, score=score, space=space, bounds=bounds, strategy=strategy, a=a,
                      max_drop=max_drop, localizer=localizer)
    task.check()
    localizer = cfg["localizer"]
    if localizer not in ("ace", "interchange"):
        raise ValueError(f"localizer must be 'ace' or 'interchange', got {localizer!r}")
    if localizer == "interchange" and localization is None and selection is None:
        interchange_pairs(task)  # a task without counterfactual pairs: refused before any work
    if cfg["score"] not in causal.SCORES:
        raise ValueError(f"unknown score {cfg['score']!r}; choose one of {causal.SCORES}")
    strat = _search.get_strategy(cfg["strategy"], generations=generations, population_size=population_size,
                                 objectives=objectives)
    if objectives is not None and not strat.multi_objective:
        raise ValueError(f"objectives are what a multi-objective search minimises; strategy {strat.name!r} minimises "
                         f"one scalar fitness (use nsga2 or nsga3)")
    if "drawdown" in strat.objectives and strat.multi_objective and task.kind != "safety":
        raise ValueError(f"the drawdown objective is a safety task's accuracy loss; task {task.name!r} is {task.kind} "
                         f"(use accuracy_loss)")
    cands = list(sites) if sites is not None else candidate_sites(model, cfg["space"], cfg["site_kind"])
    kk = _count(cfg["k"], "k")
    slots = kk if k_max is None else _count(k_max, "k_max")
    if slots < kk:
        raise ValueError(f"k_max={slots} is smaller than k={kk}")
    info = models.sites(model)
    unknown = [s for s in cands if s not in info]
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; the model's sites are {list(info)}")
    pool = sum(info[s].units for s in cands)
    if selection is None or isinstance(selection, str):
        if slots > pool:
            raise ValueError(f"k={slots}, but the candidate sites {cands} hold only {pool} units")
    if isinstance(selection, str) and selection != "random":
        raise ValueError(f"selection must be 'random' or a list of (site, unit) pairs, got {selection!r}")
    task.check_model(model)  # shapes and labels, before any work
    key = jax.random.key(seed)
    timings = {}

    t = time.perf_counter()
    loc = localization
    if isinstance(selection, str):
        ranking = random_selection(model, cands, slots, jax.random.fold_in(key, 7))
        how, loc = "random", None
    elif selection is not None:
        ranking = [Neuron(s, int(u), float("nan")) for s, u in selection]
        how, loc = "given", None
    else:
        if loc is None:
            if progress:
                print(f"[repair] localising {task.name}: {localizer} over {cands}", file=sys.stderr, flush=True)
            loc = (localize(model, task, sites=cands, num_values=num_values, progress=progress, devices=devices,
                            effect=localization_effect(task, p))
                   if localizer == "ace" else localize_interchange(model, task, sites=cands))
        own = {causal.Localization: cfg["score"], causal.Interchange: "restored"}  # an adaptive one ranks by its own
        ranking = [n for n in loc.ranking(own.get(type(loc))) if n.site in cands]
        if slots > len(ranking):
            raise ValueError(f"k={slots} but the candidate sites hold only {len(ranking)} units")
        how = "interchange" if isinstance(loc, causal.Interchange) else "ace"
    chosen = ranking if how == "given" else ranking[:kk]
    if how == "given":  # every given unit, in as many slots (or k_max)
        slots = len(chosen) if k_max is None else max(slots, len(chosen))
    timings["localize"] = time.perf_counter() - t
    problem = prepare(model, task, chosen, space=cfg["space"], sites=cands, k_max=slots, strategy=strat,
                      bounds=cfg["bounds"], init=cfg["init"], devices=devices)
    return Plan(model, task, p, cfg, strat, cands, ranking, chosen, loc, how, problem, int(seed), num_values, timings)


#: The options :func:`plan` takes (and so :func:`jaxrepair.repair.repair`).
PLAN_OPTIONS = tuple(n for n in inspect.signature(plan).parameters if n not in ("model", "task", "seed", "progress"))
