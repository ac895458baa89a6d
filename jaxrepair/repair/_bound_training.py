"""Repair on verifier bounds: fine-tuning that raises the CROWN lower bounds of a property's clauses
over input boxes (the boxes a verifier left open), so that the repaired network can be proven.

A repair trained on points fixes the points; a verifier then has to bound whole boxes, and the
CROWN bounds of a network trained on points can sit hundreds of output units below its true
minimum there (ACAS Xu N1,9 φ7 after a point repair: median −239 over the open boxes, against
sampled minima above zero). Certified training (CROWN-IBP, Zhang et al., ICLR 2020; here with the
verifier's own CROWN, not intervals) instead differentiates the bound itself: the loss asks every
clause of the property to have a row whose CROWN lower bound over the box is at least ``tau`` (in
units of the task's output scale), which is sound — the bound is below the true margin — so raising
it fixes the violations inside the box as well. Each step draws a batch of boxes (a fixed-size
draw, so any number of boxes runs one compiled program); the objective's surrogate on the repair
split and the drift of the outputs on its accuracy inputs keep the repair and the rest of the
network's behaviour. The verifier (:func:`jaxrepair.verify.verify`) decides afterwards.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrepair import models, properties
from jaxrepair.repair._plan import _count
from jaxrepair.repair._repair import _outputs, _SurrogateLoss
from jaxrepair.repair._result import RepairResult, repaired_model
from jaxrepair.repair._problem import problem_data
from jaxrepair.repair._task import Task

EVAL_BOXES = 1024  # boxes the share of closed boxes is measured on after each block of steps


def clause_bounds(graph: models.Graph, params, lo, hi, rows, rhs, owner):
    """Per box and clause, the best CROWN lower bound of its rows (``[B, clauses]``); a box is closed
    when every entry is positive. ``rows``/``rhs``: every clause's rows stacked; ``owner`` ``[clauses,
    rows]``: which rows each clause has (bool)."""
    from jaxrepair.verify import graph_crown

    b = jax.vmap(lambda a, c: graph_crown(graph, params, a, c, rows, rhs))(lo, hi)  # [B, rows]
    return jnp.max(jnp.where(owner[None], b[:, None, :], -jnp.inf), axis=-1)


@dataclasses.dataclass(frozen=True)
class _BoundLoss:
    """The surrogate and drift of :func:`jaxrepair.repair.finetune` plus the bound hinge on a batch of boxes."""

    graph: models.Graph

    def __call__(self, p, data, stats, apply, obj, a):
        lb = clause_bounds(self.graph, models.merge(p, stats), data["lo"], data["hi"], data["rows"], data["rhs"],
                           data["owner"])
        hinge = jnp.mean(jnp.sum(jax.nn.relu(data["tau"] * data["scale"] - lb), axis=-1)) / data["scale"]
        return _SurrogateLoss()(p, data, stats, apply, obj, a) + hinge, hinge


@jax.jit(static_argnames=("loss", "apply", "objective", "steps", "batch"))
def _bound_block(p, s, key, data, boxes, n, stats, numbers, a, lr, *, loss, apply, objective, steps, batch):
    """``steps`` Adam steps (one ``lax.scan``: the bound pass compiles once, where unrolling would
    compile it per step), each on ``batch`` boxes drawn from the first ``n`` of ``boxes``; returns the
    state and the mean hinge."""
    obj = objective.join(numbers)
    opt = optax.adam(lr)

    def step(carry, k):
        p, s = carry
        idx = jax.random.randint(k, (batch,), 0, n)
        d = {**data, "lo": boxes[0][idx], "hi": boxes[1][idx]}
        (_, hinge), g = jax.value_and_grad(loss, has_aux=True)(p, d, stats, apply, obj, a)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), hinge

    key, k = jax.random.split(key)
    (p, s), hinges = jax.lax.scan(step, (p, s), jax.random.split(k, steps))
    return p, s, key, jnp.mean(hinges)


@jax.jit(static_argnames=("graph",))
def _closed_share(params, lo, hi, rows, rhs, owner, n, *, graph):
    lb = clause_bounds(graph, params, lo, hi, rows, rhs, owner)
    closed = jnp.all(lb > 0, axis=-1) & (jnp.arange(lo.shape[0]) < n)
    return jnp.sum(closed) / n


def _padded(lo, hi):
    """The boxes padded (by repeating the first) to the next power of two: any count up to it shares a program."""
    m = len(lo)
    size = 1 << max(0, (m - 1).bit_length())
    pad = np.concatenate([np.arange(m), np.zeros(size - m, int)])
    return jnp.asarray(lo[pad], jnp.float32), jnp.asarray(hi[pad], jnp.float32)


def bound_finetune(model, task: Task, boxes, *, steps: int = 150, batch: int = 128, learning_rate: float = 1e-3,
                   tau: float = 0.1, a: float = 0.5, preserve: float = 10.0, eval_every: int = 10,
                   timeout: float | None = None, seed: int = 0, progress: bool = False) -> RepairResult:
    """Fine-tunes ``model`` so that the CROWN lower bounds of ``task``'s property clear ``tau`` on
    every box (module docstring).

    Args:
      model: a network the verifier bounds (a ReLU chain, or a graph of the ops ``jr.verify`` covers).
      task: a task whose property the verifier reads (a VNN-LIB property or an ACAS Xu φ); its repair
        split's surrogate (weight ``a``) and ``preserve`` × the drift of the outputs on its accuracy
        inputs from ``model``'s are part of the loss, as in :func:`jaxrepair.repair.finetune`.
      boxes: ``(lo [m, n_in], hi [m, n_in])``, e.g. the open boxes of an ``unknown`` verdict
        (``Verdict.open_boxes``) or of ``jr.verify(..., falsifier=False)``.
      steps: Adam steps, each on ``batch`` boxes drawn uniformly; training stops early once every box
        of a fixed sample of up to 1024 is closed (measured every ``eval_every`` steps), or after the
        block of steps in which ``timeout`` seconds ran out.
      tau: the bound each clause must reach, in units of the task's output ``scale`` (its repair
        split's property ``scale``, 1 without one).
      seed: the key of the box draws.
      progress: print the hinge and the share of sampled boxes closed after each block of steps.

    Returns:
      a :class:`RepairResult` (method ``"bound-finetune"``) whose ``search["history"]`` has the
      mean bound hinge and the share of sampled boxes closed per block.
    """
    from jaxrepair import verify

    prop = task.objective.prop
    if not isinstance(prop, (properties.Vnnlib, properties.Safety)):
        raise ValueError(f"bound_finetune needs a property the verifier reads (a VNN-LIB property or an ACAS Xu phi); "
                         f"task {task.name!r} has {type(prop).__name__}")
    verify.check_graph(model.graph)
    lo, hi = (np.asarray(b, np.float32) for b in boxes)
    n_in = int(np.prod(model.input_shape))
    if lo.ndim != 2 or lo.shape != hi.shape or lo.shape[1] != n_in or len(lo) == 0:
        raise ValueError(f"boxes must be (lo, hi), each [m >= 1, {n_in}]; got {np.shape(lo)} and {np.shape(hi)}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("boxes must be finite (bound an unbounded input before training on its bounds)")
    if np.any(lo > hi):
        raise ValueError("boxes: some lower corners lie above their upper corners")
    for what, k in (("steps", steps), ("batch", batch), ("eval_every", eval_every)):
        _count(k, what)
    t = time.perf_counter()
    apply, args, static = problem_data(model, task)
    rows, rhs, owner = verify.stack_clauses(prop.clauses)
    x_keep = args.data_r["accuracy"]["x"]
    y_keep = _outputs(models.merge(args.params, args.stats), x_keep, apply=apply)
    data = {"repair": args.data_r, "x_keep": x_keep, "y_keep": y_keep, "y_scale": jnp.std(y_keep) + 1e-12,
            "preserve": jnp.float32(preserve), "rows": jnp.asarray(rows), "rhs": jnp.asarray(rhs),
            "owner": jnp.asarray(owner[None, :] == np.arange(len(prop.clauses))[:, None]),
            "tau": jnp.float32(tau), "scale": jnp.float32(args.data_r["property"].get("scale", 1.0))}
    all_boxes = _padded(lo, hi)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(lo), min(len(lo), EVAL_BOXES), replace=False)
    eval_lo, eval_hi = _padded(lo[pick], hi[pick])
    loss = _BoundLoss(model.graph)
    p, s, key = args.params, optax.adam(learning_rate).init(args.params), jax.random.key(seed)
    hinges, closed = [], []
    done = 0
    while done < steps:
        block = min(eval_every, steps - done)
        p, s, key, h = _bound_block(p, s, key, data, all_boxes, jnp.int32(len(lo)), args.stats, args.objective,
                                    jnp.float32(a), jnp.float32(learning_rate), loss=loss, apply=apply,
                                    objective=static, steps=block, batch=batch)
        done += block
        hinges.append(float(h))
        closed.append(float(_closed_share(models.merge(p, args.stats), eval_lo, eval_hi, data["rows"], data["rhs"],
                                          data["owner"], jnp.int32(len(pick)), graph=model.graph)))
        if progress:
            print(f"[bound_finetune] step {done}/{steps}: bound hinge {hinges[-1]:.4g}, {100 * closed[-1]:.1f}% of "
                  f"{len(pick)} sampled boxes closed, {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)
        if closed[-1] == 1.0 or (timeout is not None and time.perf_counter() - t > timeout):
            break
    repaired = repaired_model(model, models.merge(jax.device_get(p), args.stats),
                              {"task": task.name, "method": "bound-finetune"})
    dt = time.perf_counter() - t
    return RepairResult(task.name, "bound-finetune", repaired, [], {}, task.report(model), task.report(repaired),
                        {"steps": done, "history": {"bound_hinge": hinges, "closed": closed}}, {"train": dt},
                        {"steps": steps, "batch": batch, "learning_rate": learning_rate, "tau": tau, "a": a,
                         "preserve": preserve, "boxes": len(lo), "timeout": timeout, "seed": seed})
