"""The repair problem as one value: ``prepare`` once, ``search`` as often as you like, no recompiles.

A :class:`Problem` holds a static part — the graph, the candidate sites, ``k_max`` slots, the
strategy and the objective's kind — and a traced part: the trainable parameters and batch
statistics split the NNX way, the repair/select data, the property's numbers, and the selected
neurons with their bounds. :meth:`Problem.search` vmaps one compiled program over runs: seeds,
``a`` values, budgets, bounds and neuron selections. ``jr.repair``, ``jr.repair.pareto``, the
baselines, sweeps and the feature-level repairs all go through it.

>>> import jax, jaxrepair as jr                                         # doctest: +SKIP
>>> problem = jr.repair.prepare(model, task, [("layer2", 3), ("layer3", 0)], k_max=10)  # doctest: +SKIP
>>> out = problem.search(seeds=[0, 1, 2], a=[0.2, 0.5, 0.8])             # doctest: +SKIP
>>> problem.model_for(out, 0)                                            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair import models
from jaxrepair.repair import _search
from jaxrepair.repair._space import DeltaSpace, FactorSpace, Slots, dense_consumers, chain_up
from jaxrepair.repair._task import Task

SPACES = ("factor", "delta")


def candidate_sites(model, space: str = "factor", kind: str = "post-activation") -> list[str]:
    """Hidden sites a repair of ``space`` can act on: post-activation sites (jaxrepair's default) or
    the pre-activation outputs of dense/conv layers (CARE's); deltas need dense → act → dense."""
    if space not in SPACES:
        raise ValueError(f"unknown repair space {space!r}; choose one of {SPACES}")
    info = models.sites(model)
    if kind == "post-activation":
        sites = models.hidden_sites(model)
    elif kind == "pre-activation":
        sites = [s.name for s in info.values() if s.kind == "pre-activation" and s.op in ("dense", "conv2d")]
    else:
        raise ValueError(f"candidate sites must be 'post-activation' or 'pre-activation', got {kind!r}")
    if space == "delta":
        g = model.graph
        sites = [s for s in sites if len(info[s].shape) == 1 and dense_consumers(g, s) is not None
                 and (chain_up(g, s)[0] is not None and chain_up(g, s)[0].op == "dense")]
    if not sites:
        raise ValueError(f"the model has no {kind} site a {space!r} repair can act on")
    return sites


def _pairs(neurons) -> list[tuple[str, int]]:
    """``[(site, unit)]`` from ``Neuron``s (a NamedTuple ``(site, unit, score)``) or pairs."""
    out = []
    for n in neurons:
        if not isinstance(n, (tuple, list)) or len(n) not in (2, 3):
            raise ValueError(f"a selected neuron is a (site, unit) pair or a Neuron, got {n!r}")
        out.append((str(n[0]), int(n[1])))
    return out


@dataclasses.dataclass
class Problem:
    """A prepared repair: see the module docstring. Build with :func:`prepare`."""

    model: models.Network
    task: Task
    spec: _search.Spec
    args: _search.Args
    slots: Slots  # the default selection (host arrays)
    selected: list  # [(site, unit)] of the default selection
    bounds: object  # the space's bound setting (factor (low, high); delta: × layer std)
    mesh: object = None

    @property
    def space(self):
        return self.spec.space

    @property
    def strategy(self) -> _search.Strategy:
        return self.spec.strategy

    def select(self, neurons) -> Slots:
        """Slots for another selection of neurons (same program: no recompilation)."""
        return self.space.slots(_pairs(neurons))

    def search(self, *, seeds=0, a=0.5, max_drop=None, bounds=None, selections=None, progress=False,
               max_runs_per_call: int = 64) -> dict:
        """Runs the search once per run, all runs in one vmapped compiled program.

        Each of ``seeds``, ``a``, ``max_drop``, ``bounds`` and ``selections`` (lists of neurons) is a
        scalar/one value for every run or a sequence with one entry per run; sequences must agree in
        length. At most ``max_runs_per_call`` runs share one program call (memory stays bounded;
        more runs go in batches of that size through the same compiled program). Returns numpy
        arrays with a leading run axis (``solution``, ``select_fitness``,
        ``select_violation``, ``select_accuracy``, ``generations_run``, ``evaluations``, ``history``).
        """
        per_run = {"seeds": seeds, "a": a, "max_drop": max_drop, "bounds": bounds, "selections": selections}
        # a list is one value per run (a tuple is one value: factor bounds are (low, high))
        lengths = {k: len(v) for k, v in per_run.items() if isinstance(v, list)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"per-run lists disagree in length: {lengths}")
        n = next(iter(lengths.values()), 1)
        each = {k: (v if isinstance(v, list) else [v] * n) for k, v in per_run.items()}
        a_runs = [float(x) for x in each["a"]]
        bad = [x for x in a_runs if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"a must be in [0, 1], got {bad}")
        md_runs = each["max_drop"]
        bad = [x for x in md_runs if x is not None and not x >= 0]
        if bad:
            raise ValueError(f"max_drop must be a non-negative accuracy fraction (0.01 = one point), got {bad}")
        slot_runs = [self.slots if s is None else self.select(s) for s in each["selections"]]
        bound_runs = [self.bounds if b is None else b for b in each["bounds"]]
        lohi = [self.space.bounds(self.args.params, s, b) for s, b in zip(slot_runs, bound_runs)]
        runs = _search.Run(  # host arrays: placed by the program call (no eager device ops to compile)
            seed=np.asarray([int(s) for s in each["seeds"]], np.int32), a=np.asarray(a_runs, np.float32),
            max_drop=np.asarray([np.inf if m is None else m for m in md_runs], np.float32),
            lo=np.stack([lh[0] for lh in lohi]), hi=np.stack([lh[1] for lh in lohi]),
            slots=Slots(np.stack([s.site for s in slot_runs]), np.stack([s.unit for s in slot_runs])))
        n = len(slot_runs)
        if n <= max_runs_per_call:
            out = _search.run_program(self.spec, self.args, runs, progress=progress, mesh=self.mesh)
        else:  # batches of max_runs_per_call runs (the last padded): one compiled program, bounded memory
            parts = []
            for i in range(0, n, max_runs_per_call):
                idx = np.minimum(np.arange(i, i + max_runs_per_call), n - 1)
                part = _search.run_program(self.spec, self.args, jax.tree.map(lambda v: v[idx], runs), progress=False,
                                           mesh=self.mesh)
                parts.append(jax.tree.map(lambda v: v[: min(max_runs_per_call, n - i)], part))
                if progress:
                    print(f"[search] runs {min(i + max_runs_per_call, n)}/{n}", file=sys.stderr, flush=True)
            out = jax.tree.map(lambda *v: np.concatenate(v), *parts)
        out["slots"] = slot_runs
        return out

    def params_for(self, solution, slots: Slots | None = None) -> dict:
        """Plain params (batch statistics included) of the model a solution repairs to."""
        slots = self.slots if slots is None else slots
        new = self.space.fold(self.args.params, slots, np.asarray(solution))
        return models.merge(new, jax.device_get(self.args.stats))

    def model_for(self, out: dict, i: int = 0, record: dict | None = None) -> models.Network:
        """The repaired network of run ``i`` of a :meth:`search` output (a normal model)."""
        net = self.model.with_params(self.params_for(out["solution"][i], out["slots"][i]))
        net.meta = {**self.model.meta, "repair": record or {}}
        return net

    def readable(self, out: dict, i: int = 0) -> dict:
        """``{site: values}`` of run ``i``'s solution for the selected neurons."""
        return self.space.unflatten(out["slots"][i], out["solution"][i])


def problem_data(model: models.Network, task: Task):
    """``(apply, Args, objective static part)``: what every repair program of ``model`` on ``task``
    reads — trainable params and batch statistics split the NNX way, the repair and select splits,
    the property's numbers — shared by the search, fine-tuning and the feature-level repairs."""
    task.check_model(model)
    models.check_finite(model.params(), "model params")
    apply, params, stats = models.split(model)
    static, numbers = task.objective.split()
    args = _search.Args(jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, stats), task.data["repair"],
                        task.data["select"], numbers)
    return apply, args, static


def prepare(
    model: models.Network,
    task: Task,
    neurons: Sequence = (),
    *,
    space: str = "factor",
    sites: Sequence[str] | None = None,
    site_kind: str = "post-activation",
    k_max: int | None = None,
    strategy="pso",
    bounds=None,
    init: str = "random",
    devices=None,
) -> Problem:
    """Prepares the repair of ``neurons`` (``[(site, unit)]`` or ``Neuron``s) of ``model`` on ``task``.

    Args:
      space: ``"factor"`` (CARE) or ``"delta"`` (weight deltas).
      sites: the candidate sites every selection of this problem may draw from (static; default:
        every ``site_kind`` site the space can act on). Fewer sites keep more of the network shared
        by all particles.
      k_max: slots (default: ``len(neurons)``); any selection of up to ``k_max`` neurons runs the
        same compiled program.
      strategy: a strategy name or :class:`Strategy`.
      bounds: factor ``(low, high)`` (default (0, 2)) or delta bound × layer std (default 1).
      init: ``"random"`` (uniform swarm plus the unrepaired model) or ``"identity"`` (every particle
        starts at the unrepaired model, as CARE's swarm does).
      devices: devices the population is sharded over (``None``: all; 1: no sharding).
    """
    apply, args, static = problem_data(model, task)
    pairs = _pairs(neurons)
    info = models.sites(model)
    unknown = sorted({s for s, _ in pairs} - set(info))
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; the model's sites are {list(info)}")
    if init not in ("random", "identity"):
        raise ValueError(f"init must be 'random' or 'identity', got {init!r}")
    strat = _search.get_strategy(strategy)
    cands = list(sites) if sites is not None else candidate_sites(model, space, site_kind)
    k_max = int(k_max if k_max is not None else max(len(pairs), 1))
    if k_max < 1:
        raise ValueError(f"k_max must be at least 1, got {k_max}")
    params = args.params
    if space == "factor":
        sp = FactorSpace.build(model.graph, info, cands, k_max)
        bounds = (0.0, 2.0) if bounds is None else tuple(float(b) for b in bounds)
    elif space == "delta":
        sp = DeltaSpace.build(model.graph, info, cands, k_max, params)
        bounds = 1.0 if bounds is None else bounds
    else:
        raise ValueError(f"unknown repair space {space!r}; choose one of {SPACES}")
    slots = sp.slots(pairs)
    sp.bounds(params, slots, bounds)  # checks the bounds before any work
    return Problem(model, task, _search.Spec(sp, strat, static, init), args, slots, pairs, bounds,
                   _search.population_mesh(devices))
