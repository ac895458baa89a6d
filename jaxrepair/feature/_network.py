"""Feature-level repair of a whole trained network (any jaxrepair model, e.g. a ResNet):
fine-tuning with IRMv1 over environments, or with counterfactual augmentation / logit pairing.

:func:`jaxrepair.feature.train_irm` and :func:`counterfactual_training` train small tabular models
from scratch; these two start from the model to repair and change all of its trainable weights.
Each step is one compiled function called from Python (conv gradients inside a ``lax.scan`` are
~15× slower on XLA's CPU backend); batch statistics are not trained.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrepair.feature._irm import _irm_penalty
from jaxrepair.models import Network, merge, split
from jaxrepair.records import Progress


def _fit(model: Network, loss, sample, *, steps: int, learning_rate: float, key, progress: bool, what: str,
         select: Callable | None = None, eval_every: int = 50) -> Network:
    """Adam on ``loss(apply, params, batch, key)`` with ``sample(step) -> batch`` for ``steps`` steps.
    ``select(network) -> float``: the network is scored every ``eval_every`` steps, at the start
    and at the end, and the best-scoring one is returned (higher is better); without it, the last."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if select is not None and not 1 <= eval_every <= steps:
        raise ValueError(f"eval_every must be between 1 and steps ({steps}), got {eval_every}")
    raw_apply, params, stats = split(model)

    def apply(p, x):
        return raw_apply(merge(p, stats), x)

    opt = optax.adam(learning_rate)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s, batch, k):
        value, g = jax.value_and_grad(lambda p: loss(apply, p, batch, k))(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, value

    params = jax.tree.map(jnp.array, params)  # donated below: never the caller's arrays
    state = opt.init(params)
    bar = Progress(what, total=steps, enabled=progress)
    best, best_score = model, float(select(model)) if select is not None else -np.inf
    for i in range(steps):
        key, k = jax.random.split(key)
        params, state, value = step(params, state, sample(i), k)
        if bar.mode != "off":
            bar.update(i + 1, f"steps, loss {float(value):.4f}")
        if select is not None and ((i + 1) % eval_every == 0 or i + 1 == steps):
            current = model.with_params(merge(jax.tree.map(jnp.copy, params), stats))  # params are donated next step
            score = float(select(current))
            if score > best_score:
                best, best_score = current, score
    bar.close()
    return best if select is not None else model.with_params(merge(params, stats))


def irm_finetune(model: Network, envs, *, penalty_weight: float = 100.0, anneal_steps: int = 50, steps: int = 300,
                 batch_size: int = 64, learning_rate: float = 1e-4, seed: int = 0, progress: bool = False,
                 select: Callable | None = None, eval_every: int = 50) -> Network:
    """IRMv1 (Arjovsky et al. 2019) from a trained model: each step draws ``batch_size`` examples of
    every environment (``envs``: a list of ``(x, y)``) and minimises the mean risk plus
    ``penalty_weight`` × the mean squared gradient of each environment's risk with respect to a
    dummy classifier scale (weight 1 for the first ``anneal_steps``, as in the reference code),
    divided by the penalty weight once it applies. ``select(network) -> float`` (e.g. accuracy on a
    validation split): keep the best-scoring checkpoint of those every ``eval_every`` steps (the
    model as given counts), instead of the last."""
    if len(envs) < 2:
        raise ValueError(f"IRM needs at least two environments, got {len(envs)}")
    sizes = [len(y) for _, y in envs]
    if min(sizes) == 0:
        raise ValueError(f"every environment needs examples; sizes {sizes}")
    rng = np.random.default_rng(seed)

    def sample(i):
        idx = [rng.integers(0, n, batch_size) for n in sizes]
        return {"x": jnp.stack([jnp.asarray(x[j]) for (x, _), j in zip(envs, idx)]),
                "y": jnp.stack([jnp.asarray(np.asarray(y)[j], jnp.int32) for (_, y), j in zip(envs, idx)]),
                "w": jnp.float32(1.0 if i < anneal_steps else penalty_weight)}

    def loss(apply, p, batch, k):
        logits = jax.vmap(lambda x: apply(p, x))(batch["x"])  # [E, B, C]
        risk = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))
        penalty = jnp.mean(jax.vmap(_irm_penalty)(logits, batch["y"]))
        return (risk + batch["w"] * penalty) / jnp.maximum(batch["w"], 1.0)

    return _fit(model, loss, sample, steps=steps, learning_rate=learning_rate, key=jax.random.key(seed),
                progress=progress, what="irm", select=select, eval_every=eval_every)


def counterfactual_finetune(model: Network, x, y, counterfactual: Callable, *, mode: str = "clp", lam: float = 1.0,
                            steps: int = 300, batch_size: int = 128, learning_rate: float = 1e-4, seed: int = 0,
                            progress: bool = False, select: Callable | None = None, eval_every: int = 50) -> Network:
    """Fine-tuning on counterfactual copies: ``counterfactual(x, key)`` returns the batch with only
    the spurious feature changed (a pure, hashable function). ``mode="augment"``: cross-entropy on
    the examples and their counterfactuals alike; ``"clp"`` (counterfactual logit pairing, Garg et
    al. 2019): cross-entropy on the examples plus ``lam`` × the mean squared logit gap to their
    counterfactuals. ``select``, ``eval_every``: keep the best checkpoint, as in :func:`irm_finetune`."""
    if mode not in ("clp", "augment"):
        raise ValueError(f"mode must be 'clp' or 'augment', got {mode!r}")
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must hold the same, non-zero number of examples; got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)

    def sample(i):
        j = rng.integers(0, len(y), batch_size)
        return {"x": jnp.asarray(x[j]), "y": jnp.asarray(y[j], jnp.int32)}

    def loss(apply, p, batch, k):
        both = apply(p, jnp.concatenate([batch["x"], counterfactual(batch["x"], k)]))
        f, f_cf = both[:batch_size], both[batch_size:]
        ce = optax.softmax_cross_entropy_with_integer_labels
        if mode == "augment":
            return 0.5 * jnp.mean(ce(f, batch["y"]) + ce(f_cf, batch["y"]))
        return jnp.mean(ce(f, batch["y"])) + lam * jnp.mean(jnp.sum((f - f_cf) ** 2, axis=-1))

    return _fit(model, loss, sample, steps=steps, learning_rate=learning_rate, key=jax.random.key(seed),
                progress=progress, what=mode, select=select, eval_every=eval_every)
