"""Invariant Risk Minimisation (IRMv1, Arjovsky et al. 2019) and the coloured-digits benchmark.

**Coloured digits** — Colored MNIST built from the bundled 8×8 digits: the label is ``digit ≥ 5``,
flipped with probability 0.25 (so shape predicts the label 75% of the time); the image is put in
the red or green channel (``[8, 8, 2]``), the colour agreeing with the label except with probability
``e``: ``e = 0.1`` and ``0.2`` in the two training environments, ``0.9`` in the test environment.
Colour is the stronger but spurious feature, reversed at test time.

**IRMv1** — ERM plus ``λ·Σ_e ‖∇_{w|w=1} R^e(w·Φ)‖²`` (the gradient of each environment's risk with
respect to a dummy scale on the logits), with the paper's annealing: ``λ = 1`` for the first
``anneal_steps`` steps, then ``penalty_weight``, the loss divided by it so the step size stays
sensible. ``penalty_weight = 0`` is plain ERM on the pooled environments. The model is a jaxrepair
MLP (flattened input), trained full-batch with optax Adam and L2 weight decay.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrepair import models
from jaxrepair.data import load_digits


def colored_digits(*, seed: int = 0, train_envs=(0.1, 0.2), test_env: float = 0.9, label_noise: float = 0.25,
                   copies: int = 4) -> dict:
    """``{"train": [(x, y), ...] per environment, "test": (x, y)}``; ``x`` is ``[N, 128]`` (8×8×2 flattened).

    The 70/15 train+validation digits are split evenly over the training environments (each digit
    appears ``copies`` times with fresh label noise and colour); the test environment uses the
    held-out test digits."""
    splits = load_digits()
    rng = np.random.default_rng(seed)
    pool_x = np.concatenate([splits["train"].x, splits["val"].x])
    pool_y = np.concatenate([splits["train"].y, splits["val"].y])
    perm = rng.permutation(len(pool_y))
    parts = np.array_split(perm, len(train_envs))

    def make(x, digits, e):
        x = np.repeat(x, copies, axis=0)
        digits = np.repeat(digits, copies)
        y = (digits >= 5).astype(np.int32)
        y = np.where(rng.random(len(y)) < label_noise, 1 - y, y)
        colour = np.where(rng.random(len(y)) < e, 1 - y, y)
        img = np.zeros((len(y), 8, 8, 2), np.float32)
        img[np.arange(len(y)), :, :, colour] = x[..., 0]
        return img.reshape(len(y), -1), y

    train = [make(pool_x[idx], pool_y[idx], e) for idx, e in zip(parts, train_envs)]
    test = make(splits["test"].x, splits["test"].y, test_env)
    return {"train": train, "test": test, "envs": {"train": list(train_envs), "test": test_env}}


def _irm_penalty(logits, y):
    def risk(w):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits * w, y))

    return jax.grad(risk)(1.0) ** 2


def train_irm(envs, *, penalty_weight: float = 1e4, anneal_steps: int = 100, steps: int = 500, hidden: int = 128,
              learning_rate: float = 1e-3, l2: float = 1e-2, seed: int = 0):
    """Trains an MLP on a list of ``(x, y)`` environments with IRMv1 (ERM when ``penalty_weight=0``).

    Returns ``(model, history)``; history holds the per-step ERM risk and penalty."""
    d = envs[0][0].shape[1]
    model = models.mlp([d, hidden, hidden, 2], key=jax.random.key(seed))
    apply, params = models.functional(model)
    xs = [jnp.asarray(x) for x, _ in envs]
    ys = [jnp.asarray(y) for _, y in envs]
    opt = optax.adam(learning_rate)

    def loss(p, step):
        risks, pens = [], []
        for x, y in zip(xs, ys):
            logits = apply(p, x)
            risks.append(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)))
            pens.append(_irm_penalty(logits, y))
        risk, pen = jnp.mean(jnp.stack(risks)), jnp.mean(jnp.stack(pens))
        weight = jnp.where(step >= anneal_steps, penalty_weight, jnp.minimum(1.0, penalty_weight))
        l2_term = sum(jnp.sum(v["kernel"] ** 2) for v in p.values() if "kernel" in v)
        total = risk + l2 * l2_term + weight * pen
        return total / jnp.maximum(weight, 1.0), (risk, pen)

    @jax.jit
    def run(p):
        def step(c, i):
            p, s = c
            (_, (risk, pen)), g = jax.value_and_grad(loss, has_aux=True)(p, i)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), (risk, pen)

        (p, _), hist = jax.lax.scan(step, (p, opt.init(p)), jnp.arange(steps))
        return p, hist

    params, (risk, pen) = run(params)
    trained = model.with_params(jax.device_get(params))
    trained.meta.update(method="irm" if penalty_weight > 0 else "erm", penalty_weight=penalty_weight, steps=steps)
    return trained, {"risk": np.asarray(risk), "penalty": np.asarray(pen)}


def accuracy(model, x, y) -> float:
    apply, params = models.functional(model)
    return float(jnp.mean(jnp.argmax(apply(params, jnp.asarray(x)), -1) == jnp.asarray(y)))


def irm_benchmark(*, seeds=(0,), penalty_weight: float = 1e4, steps: int = 500, anneal_steps: int = 100,
                  hidden: int = 128, progress: bool = False) -> dict:
    """ERM vs IRM on coloured digits: train/test accuracy per seed and their means."""
    rows = []
    for seed in seeds:
        data = colored_digits(seed=seed)
        for name, pw in (("erm", 0.0), ("irm", penalty_weight)):
            t = time.perf_counter()
            m, hist = train_irm(data["train"], penalty_weight=pw, steps=steps, anneal_steps=anneal_steps, hidden=hidden, seed=seed)
            xtr = np.concatenate([x for x, _ in data["train"]])
            ytr = np.concatenate([y for _, y in data["train"]])
            row = {"method": name, "seed": seed, "train_accuracy": accuracy(m, xtr, ytr),
                   "test_accuracy": accuracy(m, *data["test"]), "final_penalty": float(hist["penalty"][-1]),
                   "time_s": time.perf_counter() - t}
            rows.append(row)
            if progress:
                print(f"[irm] seed {seed} {name}: train {row['train_accuracy']:.3f} test {row['test_accuracy']:.3f}", flush=True)
    summary = {m: {k: float(np.mean([r[k] for r in rows if r["method"] == m])) for k in ("train_accuracy", "test_accuracy")}
               for m in ("erm", "irm")}
    return {"rows": rows, "summary": summary, "config": {"penalty_weight": penalty_weight, "steps": steps,
            "anneal_steps": anneal_steps, "hidden": hidden, "seeds": list(seeds)}}
