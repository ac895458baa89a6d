"""Certified repair: repair, verify, learn from what the verifier found, repeat until proven safe.

Each round repairs the model (``jr.repair`` with the caller's options), then runs
:func:`jaxrepair.verify.verify` on the repaired network. ``safe`` ends the loop with the
certificate. ``unsafe`` adds the confirmed counterexample to the repair split's violation set;
``unknown`` adds the points the falsifier found closest to a violation in the boxes the verifier
could not close; each with 32 points around it (so that it weighs in the violation rate), to the
repair split and to the select split (so that the checkpoint kept must fix them). The next round
repairs the *original* model on the enlarged set (so repairs do not stack up; ``warm=True``: the
last round's network instead), until ``rounds`` are spent. The result says plainly whether it was
proven.

With ``bound_steps``, a round the verifier does not prove goes on to train on bounds
(:func:`jaxrepair.repair.bound_finetune`): the boxes it left open (``unknown``), or those branch and
bound without the falsifier leaves open after bounding ``frontier_boxes`` boxes (``unsafe``: a
counterexample ends a verification before there are boxes to train on), are trained until CROWN
closes them, and the result is verified again. Point repairs fix points and the verifier must
then bound boxes, whose CROWN bounds can sit far below the network's true minimum; training the
bounds themselves is what lets the hard ACAS Xu tasks be proven
(``experiments/results/suite_acasxu.md``). Later rounds then start from the bound-trained network.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.repair._task import Task


def _with_points(task: Task, points: np.ndarray) -> Task:
    """The task with ``points`` added to the property inputs of its repair split and of its select split
    (so that the checkpoint a repair keeps is one that fixes them too)."""
    data = dict(task.data)
    for split in ("repair", "select"):
        part = task.data[split]
        prop = dict(part["property"])
        old = np.asarray(prop["x"])
        pts = np.asarray(points, old.dtype).reshape((-1, *old.shape[1:]))
        prop["x"] = jnp.asarray(np.concatenate([old, pts]))
        for k, v in part["property"].items():  # per-example arrays other than x (labels) repeat their first row
            if k != "x" and np.ndim(v) and np.shape(v)[0] == len(old):
                prop[k] = jnp.asarray(np.concatenate([np.asarray(v), np.repeat(np.asarray(v)[:1], len(pts), 0)]))
        data[split] = {**part, "property": prop}
    return dataclasses.replace(task, data=data)


def _neighbourhood(prop, points: np.ndarray, *, per_point: int = 32, radius=(0.05, 0.01, 0.002), seed: int = 0) -> np.ndarray:
    """The points and ``per_point`` others around each (±``radius`` of the box's width, clipped to the
    box; the points are shared among the radii): one point among hundreds of region samples would
    barely move the violation rate, and a violating pocket can be far narrower than 5% of the box."""
    boxes = np.asarray(prop.boxes, np.float64)
    lo, hi = boxes[:, :, 0].min(0), boxes[:, :, 1].max(0)
    flat = points.reshape(len(points), -1)
    if flat.shape[1] != lo.shape[0]:
        return points
    rng = np.random.default_rng(seed)
    r = np.resize(np.atleast_1d(np.asarray(radius, np.float64)), per_point)[None, :, None]  # [1, per_point, 1]
    around = flat[:, None, :] + rng.uniform(-1.0, 1.0, (len(flat), per_point, flat.shape[1])) * r * (hi - lo)
    out = np.concatenate([flat, np.clip(around, lo, hi).reshape(-1, flat.shape[1])])
    return out.reshape((-1, *points.shape[1:])).astype(np.float32)


def _train_bounds(result, task, prop, v, steps, frontier_boxes, verify_timeout, left, entry, progress):
    """Bound training on the boxes ``v`` left open (or that branch and bound without the falsifier
    leaves open), then verification of the new network; ``(result, verdict)``, ``entry`` updated.
    Training stops with a third of ``verify_timeout`` (or of what is left of the budget) to spare for
    the verification."""
    from jaxrepair import verify
    from jaxrepair.repair._bound_training import bound_finetune

    t = time.perf_counter()
    if v.open_boxes is None:  # unsafe: a counterexample ended it before there were boxes to train on
        v = verify.verify(result.model, prop, timeout=left(verify_timeout), falsifier=False, max_boxes=frontier_boxes,
                          branching="input")  # bound training needs the open input boxes, not ReLU domains
        if v.open_boxes is None:  # decided without the falsifier (a box too small to split)
            return result, v
    room = left(float("inf"))  # what is left of the budget (inf: no budget)
    timeout = None if room == float("inf") else max(1.0, room - left(verify_timeout) / 3)
    trained = bound_finetune(result.model, task, v.open_boxes, steps=steps, timeout=timeout, progress=progress)
    v = verify.verify(trained.model, prop, timeout=left(verify_timeout))
    entry["bound"] = {"boxes": trained.config["boxes"], "steps": trained.search["steps"],
                      "closed": trained.search["history"]["closed"][-1], "train_s": trained.timings["train"],
                      "verdict": v.verdict, "verify_s": v.seconds, "boxes_bounded": v.boxes,
                      "seconds": time.perf_counter() - t}
    entry["verdict"] = v.verdict  # the round's verdict: the bound-trained network's ("points_verdict": before)
    if progress:
        print(f"[certify] round {entry['round']} trained on the bounds of {trained.config['boxes']} boxes "
              f"({trained.search['steps']} steps): {v.verdict}", file=sys.stderr, flush=True)
    return trained, v


def certified_repair(model, task: Task, *, rounds: int = 4, verify_timeout: float = 60.0, progress: bool = False,
                     method=None, sweep: int = 0, budget: float | None = None, warm: bool = False,
                     bound_steps: int = 150, frontier_boxes: int = 20_000, **repair_kwargs):
    """Repairs ``model`` on ``task`` until :func:`jaxrepair.verify.verify` proves the task's property
    (a VNN-LIB property or an ACAS Xu φ) or ``rounds`` are spent; see the module docstring.

    ``method``: the repair run each round, ``method(model, task) -> RepairResult`` (for instance
    ``functools.partial(jr.repair.finetune, a=0.5)``); default ``jr.repair`` with ``repair_kwargs``.
    ``sweep``: when a round is not proven, also add the violations that the falsifier finds in
    ``sweep`` small sub-boxes of the property (:func:`jaxrepair.verify.counterexamples`) on that
    round's network, so that one round learns every place it still fails, not one point of it.
    ``budget``: seconds for the whole loop; no round and no bound training starts after it is spent
    and each verification gets at most what is left of it (never less than 1 s).
    ``warm``: each round after the first repairs the previous round's network (fine-tuning it on the
    enlarged set) instead of the original; a repair that starts where the last one held keeps what it
    had fixed, where one from the original tends to break somewhere new (the final ``before`` is still
    the original's).
    ``bound_steps``: steps of :func:`jaxrepair.repair.bound_finetune` on the boxes a round's
    verification left open (0: none; module docstring); ``frontier_boxes``: boxes bounded by branch
    and bound without the falsifier to gather those boxes when the verdict was ``unsafe`` (a count,
    not seconds, so that the boxes do not depend on the machine's speed).

    Returns the last round's :class:`RepairResult` with ``result.certificate`` set to
    ``{"proven": bool, "verdict", "rounds": [...per round...], "certificate_boxes"}``.
    """
    from jaxrepair import properties, verify
    from jaxrepair.repair._plan import _count
    from jaxrepair.repair._repair import repair

    prop = task.objective.prop
    if not isinstance(prop, (properties.Vnnlib, properties.Safety)):
        raise ValueError(f"certified repair needs a property the verifier reads (a VNN-LIB property or an ACAS Xu phi); "
                         f"task {task.name!r} has {type(prop).__name__}")
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    if isinstance(bound_steps, bool) or not isinstance(bound_steps, int) or bound_steps < 0:
        raise ValueError(f"bound_steps must be a non-negative integer, got {bound_steps!r}")
    _count(frontier_boxes, "frontier_boxes")
    verify.readable(model)  # a network the verifier cannot bound is refused before any work
    history, current, result, v = [], task, None, None
    t_start = time.perf_counter()

    def left(limit):
        return limit if budget is None else max(1.0, min(limit, budget - (time.perf_counter() - t_start)))

    for r in range(rounds):
        if r and budget is not None and time.perf_counter() - t_start >= budget:
            break
        t = time.perf_counter()
        start = result.model if (warm or bound_steps) and result is not None else model
        result = (method(start, current) if method is not None
                  else repair(start, current, progress=progress, **repair_kwargs))
        t_repair = time.perf_counter() - t
        v = verify.verify(result.model, prop, timeout=left(verify_timeout))
        entry = {"round": r + 1, "verdict": v.verdict, "points_verdict": v.verdict, "verify_s": v.seconds,
                 "repair_s": t_repair, "boxes": v.boxes,
                 "repair_set": int(np.shape(current.data["repair"]["property"]["x"])[0]),
                 "violation_after": result.after["violation"], "accuracy_after": result.after["accuracy"]}
        history.append(entry)
        if progress:
            print(f"[certify] round {r + 1}: {v.verdict} after {v.seconds:.1f}s of verification", file=sys.stderr, flush=True)
        if v.verdict != "safe" and bound_steps and (budget is None or time.perf_counter() - t_start < budget):
            result, v = _train_bounds(result, current, prop, v, bound_steps, frontier_boxes, verify_timeout, left,
                                      entry, progress)
        if v.verdict == "safe":
            break
        points = v.counterexample[None] if v.counterexample is not None else v.worst
        if points is None or len(points) == 0:
            break
        points = _neighbourhood(prop, np.asarray(points), seed=r)
        if sweep:
            more, _ = verify.counterexamples(result.model, prop, jax.random.key(7919 + r), num_boxes=sweep)
            points = np.concatenate([points.reshape(len(points), -1), more]).reshape((-1, *points.shape[1:]))
            entry["sweep_violations"] = len(more)
        current = _with_points(current, points)
    result.before = task.report(model)  # the last round may have started from another network
    result.certificate = {"proven": v.verdict == "safe", "verdict": v.verdict, "rounds": history,
                          "certificate_boxes": len(v.certificate)}
    result.config = {**result.config, "certify": {"rounds": rounds, "verify_timeout": verify_timeout, "sweep": sweep,
                                                 "budget": budget, "warm": warm,
                                                 "bound_steps": bound_steps, "frontier_boxes": frontier_boxes}}
    return result
