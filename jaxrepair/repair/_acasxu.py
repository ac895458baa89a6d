"""ACAS Xu repair tasks as the field sets them up (VeRe, Ma et al., ICSE 2024), and their metrics.

One task is a network N_{i,j} and a property φ it violates. Its sets, all drawn from seeded keys:

* **repair set** — violating inputs of the original network inside φ's region: uniform samples
  of the region that violate, plus what the falsifier (:func:`jaxrepair.verify.counterexamples`,
  projected gradient ascent on φ's margin in many small sub-boxes) finds; the falsifier's near
  misses and safe region points, which the repair's hinge also covers; and samples of the whole
  input domain whose advisory (and outputs) the repair keeps. Violations too rare for sampling and
  uniform sub-boxes (N1,9 φ7) are searched around a counterexample of the verifier;
* **generalisation set** — *fresh* falsifier-found violating inputs of the original network
  (other keys, never used by the repair);
* **drawdown set** — inputs sampled uniformly over the whole ACAS Xu input domain where the
  original network does not violate φ (outside φ's region nothing is violated).

Metrics of a repaired network (:func:`task_metrics`): *repair-set success*, the share of the
repair set's violating inputs it no longer violates; *generalisation*, the same share on the
generalisation set; *drawdown*, the share of the drawdown set whose advisory (the argmin score)
changes. "Proven safe" comes from :func:`jaxrepair.verify.verify` on the repaired network, not
from sampling.

Where this differs from VeRe: VeRe's code was not available to us, so its sets come from its paper's
description (counterexamples split into a repair and a generalisation set; drawdown as the accuracy
lost on inputs labelled by the original network); ours are drawn by :func:`acasxu_task` with its
own sizes, and our drawdown set covers the whole input domain rather than a held-out set of
correctly-behaving inputs, so the figures compare in kind, not sample for sample. Our time is the
whole task (drawing the sets, every repair round and every verification), on a CPU.

The repair (:data:`SETTINGS`, :func:`repair_task`) is full-network fine-tuning
(:func:`jaxrepair.repair.finetune`): a hinge that asks every covered region point for a margin
of ``margin`` output-scale units (a repaired network left on the boundary cannot be proven),
cross-entropy on the domain points' advisories and a drift term on their outputs, inside
:func:`jaxrepair.repair.certified_repair`, which adds the verifier's counterexamples (with points
around them at three radii) and a falsifier sweep of the repaired network, and trains a round the
verifier does not prove on the CROWN bounds of the boxes left open
(:func:`jaxrepair.repair.bound_finetune`, ``bound_steps``), until proven or out of rounds or time.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair import models, properties
from jaxrepair.repair._task import Objective, Task, _SafetyEffect, metrics

#: The repair suite: the 34 networks N_{x,y} with x >= 2 that violate φ2 (all but N3,3 and N4,2),
#: plus N1,9 φ7 and N2,9 φ8 — 36 tasks, as (i, j, φ).
SUITE = tuple([(i, j, 2) for i in range(2, 6) for j in range(1, 10) if (i, j) not in ((3, 3), (4, 2))]
              + [(1, 9, 7), (2, 9, 8)])


def task_name(i: int, j: int, phi: int) -> str:
    return f"N{i},{j}-phi{phi}"


def input_domain(model) -> tuple[np.ndarray, np.ndarray]:
    """The network's input domain ``(low, high)``: the ``.nnet`` file's clip."""
    clip = model.graph.node("input.clip")
    return np.asarray(clip.attr["min"], np.float32), np.asarray(clip.attr["max"], np.float32)


def falsified_inputs(model, prop: properties.Safety, key, *, num_boxes: int = 256, around=None) -> np.ndarray:
    """Violating inputs of ``model`` the falsifier finds in ``num_boxes`` small sub-boxes of φ's
    region (:func:`jaxrepair.verify.counterexamples`; ``around``: centred on these points), confirmed
    by φ's own predicate. ``[n, 5]``."""
    from jaxrepair import verify

    xs, _ = verify.counterexamples(model, prop, key, num_boxes=num_boxes, around=around)
    if len(xs) == 0:
        return xs.reshape(0, prop.boxes.shape[1])
    apply, params = models.functional(model)
    return xs[properties.violations(prop, apply, params, xs) > 0]


@dataclasses.dataclass
class AcasxuSets:
    """The inputs a task's metrics are measured on (see the module docstring)."""

    repair_violating: np.ndarray  # [n_r, 5]
    generalisation: np.ndarray  # [n_g, 5]
    drawdown: np.ndarray  # [n_d, 5]
    drawdown_advisory: np.ndarray  # [n_d] the original network's advisories there

    def sizes(self) -> dict:
        return {"repair_violating": len(self.repair_violating), "generalisation": len(self.generalisation),
                "drawdown": len(self.drawdown)}


def _violating(prop, apply, params, key, n_region: int, n_falsify: int, model, around=None):
    """``(violating, near, safe)``: region samples that violate plus the falsifier's confirmed
    violations; the falsifier's closest approaches that do not violate; region samples that do not."""
    from jaxrepair import verify

    x = np.asarray(prop.sample(key, n_region))
    v = properties.violations(prop, apply, params, x) > 0
    found, _ = verify.counterexamples(model, prop, jax.random.fold_in(key, 1), num_boxes=n_falsify, near=True,
                                      around=around)
    fv = properties.violations(prop, apply, params, found) > 0 if len(found) else np.zeros(0, bool)
    return np.concatenate([x[v], found[fv]]), found[~fv], x[~v]


def _pocket(model, prop, *, timeout: float = 60.0):
    """A verifier's counterexample, for violations too rare for sampling and a uniform falsifier
    (N1,9 φ7: none in 20,000 samples); None if the verifier finds none."""
    from jaxrepair import verify

    v = verify.verify(model, prop, timeout=timeout)
    return None if v.counterexample is None else np.asarray(v.counterexample, np.float32)[None]


def acasxu_task(model, phi: int, *, name: str | None = None, seed: int = 0, max_violating: int = 500,
                n_region: int = 20_000, n_falsify: int = 256, n_cover: int = 6000, n_keep: int = 4000, n_drawdown: int = 10_000,
                margin: float = 3.0) -> tuple[Task, AcasxuSets]:
    """The repair :class:`Task` of ``model`` against φ``phi`` and the sets its metrics use.

    Args:
      model: an ACAS Xu network (``jr.data.load_acasxu(i, j)`` or a converted one with the same clip).
      phi: the property number (1..10).
      seed: every set is drawn from keys folded from it.
      max_violating: cap on the repair set's violating inputs (sampled ones first).
      n_region: uniform samples of the region drawn per split; n_falsify: falsifier sub-boxes.
      n_cover: correctly-behaving region points the repair's hinge also covers (kept safe, with margin).
      n_keep: domain points whose advisory (and outputs) the repair preserves, per split.
      n_drawdown: domain samples of the drawdown set (before removing violating ones).
      margin: the repair's hinge asks for a violation margin below ``-margin`` (in units of the
        output scale), so that the repaired network is not left on the boundary the verifier must prove.

    Returns:
      ``(task, sets)``: ``task.data`` has ``repair`` (violating + correct region points; domain points
      labelled with the original advisory), ``select`` (the same from other keys, for choosing a
      checkpoint) and ``test`` (the generalisation set and the drawdown set).
    """
    prop = properties.Safety(phi)
    apply, params = models.functional(model)
    lo, hi = input_domain(model)
    base = jax.random.key(20_000 + seed)
    scale = float(np.std(np.asarray(apply(params, prop.sample(jax.random.fold_in(base, 9), 2048)))))

    # rare violations (found neither by sampling nor by the falsifier on uniform sub-boxes): every set's
    # falsifier starts around a counterexample of the verifier instead
    probe = falsified_inputs(model, prop, jax.random.fold_in(base, 5), num_boxes=n_falsify)
    x_probe = np.asarray(prop.sample(jax.random.fold_in(base, 6), n_region))
    rare = len(probe) + int(np.sum(properties.violations(prop, apply, params, x_probe) > 0)) < 10
    around = _pocket(model, prop) if rare else None

    def split(tag: int):
        k = jax.random.fold_in(base, tag)
        bad, near, ok = _violating(prop, apply, params, k, n_region, n_falsify, model, around)
        bad = bad[:max_violating]
        # repairing: the violating inputs and the falsifier's near misses (where a repair tends to
        # break next) weigh as much as the covered safe region points; selecting: as many safe region
        # points as violating ones, so that fixing them dominates the select-split objective
        hot, cold = (np.concatenate([bad, near]), ok[:n_cover]) if tag == 1 else (bad, ok[:max(len(bad), 1)])
        weight = np.concatenate([np.full(len(hot), max(len(cold), 1) / max(len(hot), 1)), np.ones(len(cold))])
        # preserved: the advisories over the whole domain, where drawdown is measured; the region is
        # left to the hinge (keeping its outputs as they were would fight the repair)
        x_acc = np.asarray(properties.sample_domain(jax.random.fold_in(k, 2), lo, hi, n_keep))
        y_acc = properties.predict(apply, params, x_acc, "argmin")
        return {"property": {"x": jnp.asarray(np.concatenate([hot, cold])), "scale": jnp.asarray(scale),
                             "margin": jnp.asarray(margin), "weight": jnp.asarray(weight, jnp.float32)},
                "accuracy": {"x": jnp.asarray(x_acc), "y": jnp.asarray(y_acc)}}, bad

    repair, bad_r = split(1)
    select, _ = split(2)
    gen = falsified_inputs(model, prop, jax.random.fold_in(base, 3), num_boxes=2 * n_falsify, around=around)
    xd = np.asarray(properties.sample_domain(jax.random.fold_in(base, 4), lo, hi, n_drawdown))
    keep = properties.violations(prop, apply, params, xd) == 0
    xd = xd[keep]
    sets = AcasxuSets(bad_r, gen, xd, properties.predict(apply, params, xd, "argmin"))
    if len(bad_r) == 0:
        raise ValueError(f"{name or 'the network'}: no violation of phi{phi} found by sampling, the falsifier or the "
                         f"verifier; nothing to repair")
    test = {"property": {"x": jnp.asarray(gen if len(gen) else bad_r)},
            "accuracy": {"x": jnp.asarray(xd), "y": jnp.asarray(sets.drawdown_advisory)}}
    obj = Objective(prop, "argmin")
    data = {"repair": repair, "select": select, "test": test}

    def report(m):
        v, acc = metrics(obj, m, data["test"])
        return {"violation": v, "accuracy": acc, "drawdown": 1.0 - acc}

    task = Task(name or f"acasxu-phi{phi}", "safety", obj, data, _SafetyEffect(phi, scale),
                {"x": repair["property"]["x"]}, report,
                {"seed": seed, "margin": margin, "rare": rare, **sets.sizes()})
    return task, sets


def task_metrics(original, repaired, prop: properties.Safety, sets: AcasxuSets) -> dict:
    """Repair-set success, generalisation and drawdown of ``repaired`` (module docstring)."""
    ap, pp = models.functional(repaired)

    def fixed(x):
        if len(x) == 0:
            return None
        return float(np.mean(properties.violations(prop, ap, pp, x) == 0))

    adv = properties.predict(ap, pp, sets.drawdown, "argmin")
    return {"repair_success": fixed(sets.repair_violating), "generalisation": fixed(sets.generalisation),
            "drawdown": float(np.mean(adv != sets.drawdown_advisory)) if len(adv) else 0.0}


#: What the suite does to each task (``jaxrepair suite acasxu`` and :func:`repair_task` with no options):
#: full fine-tuning (``finetune``) of the hinge on the region, the advisories kept by cross-entropy and
#: the outputs by a drift term, verified, trained on the bounds of the boxes left open when not proven,
#: and repaired again with what the verifier and a falsifier sweep found, for at most ``rounds`` rounds.
SETTINGS = {"a": 0.5, "steps": 300, "learning_rate": 1e-3, "preserve": 10.0, "margin": 3.0, "n_region": 20_000,
            "n_falsify": 256, "n_cover": 6000, "n_keep": 4000, "rounds": 4, "verify_timeout": 30.0, "sweep": 256,
            "warm": False, "bound_steps": 150, "frontier_boxes": 20_000, "seed": 0}


def repair_task(i: int, j: int, phi: int, *, budget: float | None = None, progress: bool = False, **settings):
    """Certified repair of the bundled N_{i,j} against φ``phi`` and its metrics (module docstring).

    Args:
      budget: seconds for the whole task (sets, repair rounds, verification); unproven when spent.
      settings: any of :data:`SETTINGS` to override.

    Returns:
      ``(record, result)``: the JSON record (proven, verdict, rounds, repair_success,
      generalisation, drawdown, seconds, ...) and the last round's
      :class:`~jaxrepair.repair.RepairResult` (``result.model`` is the repaired network).
    """
    from jaxrepair.data import load_acasxu
    from jaxrepair.repair._certified import certified_repair
    from jaxrepair.repair._repair import finetune

    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(SETTINGS)}")
    cfg = {**SETTINGS, **settings}
    name = task_name(i, j, phi)
    t0 = time.perf_counter()
    model = load_acasxu(i, j)
    prop = properties.Safety(phi)
    task, sets = acasxu_task(model, phi, name=name, **{k: cfg[k] for k in ("seed", "margin", "n_region", "n_falsify",
                                                                            "n_cover", "n_keep")})
    t_sets = time.perf_counter() - t0
    method = functools.partial(finetune, a=cfg["a"], steps=cfg["steps"], learning_rate=cfg["learning_rate"],
                               preserve=cfg["preserve"])
    result = certified_repair(model, task, method=method, rounds=cfg["rounds"], verify_timeout=cfg["verify_timeout"],
                              sweep=cfg["sweep"], warm=cfg["warm"], bound_steps=cfg["bound_steps"],
                              frontier_boxes=cfg["frontier_boxes"], budget=None if budget is None else max(1.0, budget - t_sets),
                              progress=progress)
    t_repair = time.perf_counter() - t0 - t_sets
    cert = result.certificate
    record = {"task": name, "network": [i, j], "property": phi, "proven": cert["proven"], "verdict": cert["verdict"],
              "rounds": len(cert["rounds"]), **task_metrics(model, result.model, prop, sets),
              "seconds": time.perf_counter() - t0, "timings": {"sets_s": t_sets, "repair_and_verify_s": t_repair},
              "sets": sets.sizes(), "certify": cert["rounds"], "settings": cfg, "budget": budget}
    return record, result
