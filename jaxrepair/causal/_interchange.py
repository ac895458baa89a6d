"""Counterfactual tracing of neurons by interchange interventions (CCBR-style).

For pairs ``(x, x')`` — a sensitive-attribute counterfactual, a triggered/clean pair — each neuron's
activation on ``x'`` is patched into the run on ``x`` (``do(h_j = h_j(x'))``), one neuron at a time,
all neurons of a site in one vmapped program. A neuron's score is the share of the output
difference it restores::

    restored_j = Σ_pairs (y_j − y)·(y' − y) / Σ_pairs ‖y' − y‖²

where ``y = f(x)``, ``y' = f(x')`` and ``y_j`` the patched run (output vectors, or one class).
1 means the neuron alone carries the whole difference. ``magnitude_j`` is the mean ``‖y_j − y‖``.
The result ranks neurons like an ACE localisation and :func:`jaxrepair.repair.repair` accepts it.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrepair.causal._ace import Neuron
from jaxrepair.models import Network, functional, hidden_sites, sites as site_info

SCORES = ("restored", "magnitude")


@dataclasses.dataclass
class Interchange:
    """Interchange-intervention scores per site: ``{site: {"restored": [U], "magnitude": [U]}}``."""

    scores_by_site: dict
    per_channel: dict
    output: int | None
    num_pairs: int
    total_difference: float  # mean ‖y' − y‖²
    timings: dict
    effect: str = "interchange"

    @property
    def sites(self) -> dict:
        return self.scores_by_site

    def scores(self, score: str = "restored") -> dict[str, np.ndarray]:
        if score not in SCORES:
            score = "restored"  # repair() passes ACE score names; interchange has its own
        return {s: v[score] for s, v in self.scores_by_site.items()}

    def ranking(self, score: str = "restored") -> list[Neuron]:
        rows = [Neuron(s, int(u), float(v)) for s, vals in self.scores(score).items() for u, v in enumerate(vals)]
        order = sorted(range(len(rows)), key=lambda i: -rows[i].score)
        return [rows[i] for i in order]

    def top(self, k: int, score: str = "restored") -> list[Neuron]:
        return self.ranking(score)[:k]

    def to_json(self, *, top_k: int = 20) -> dict:
        return {
            "effect": self.effect,
            "output": self.output,
            "num_pairs": self.num_pairs,
            "total_difference": self.total_difference,
            "top": [{"site": n.site, "unit": n.unit, "score": n.score} for n in self.top(top_k)],
            "sites": {s: {k: np.asarray(v).tolist() for k, v in d.items()} for s, d in self.scores_by_site.items()},
            "timings": self.timings,
        }


@jax.jit(static_argnames=("apply", "site", "per_channel", "output", "chunk"))
def _site_scores(params, x, x_cf, *, apply, site, per_channel, output, chunk):
    env, env_cf = apply.sites(params, x), apply.sites(params, x_cf)
    h, h_cf = env[site], env_cf[site]
    y, y_cf = env[apply.graph.output], env_cf[apply.graph.output]
    if output is not None:
        y, y_cf = y[:, output : output + 1], y_cf[:, output : output + 1]
    diff = (y_cf - y).reshape(y.shape[0], -1)
    shape = h.shape[1:]
    n_units = shape[-1] if per_channel else math.prod(shape)

    def one(j):
        if per_channel:
            mask = (jnp.arange(shape[-1]) == j).reshape((1,) * len(shape) + (-1,))
        else:
            mask = (jnp.arange(n_units) == j).reshape((1, *shape))
        patched = jnp.where(mask, h_cf, h)
        yj = apply.resume(params, env, overrides={site: patched})
        if output is not None:
            yj = yj[:, output : output + 1]
        d = (yj - y).reshape(y.shape[0], -1)
        return jnp.sum(d * diff), jnp.mean(jnp.linalg.norm(d, axis=1))

    num, mag = lax.map(one, jnp.arange(n_units), batch_size=chunk)
    return num, mag, jnp.sum(diff * diff)


def interchange(
    model: Network,
    x,
    x_cf,
    *,
    sites=None,
    output: int | None = None,
    per_channel: bool | None = None,
    chunk: int = 16,
) -> Interchange:
    """Scores every neuron of ``sites`` (default: hidden post-activation sites) by the share of the
    output difference between ``x_cf`` and ``x`` that patching it from ``x_cf`` restores."""
    x, x_cf = np.asarray(x, np.float32), np.asarray(x_cf, np.float32)
    if x.shape != x_cf.shape:
        raise ValueError(f"x and x_cf must have the same shape; got {x.shape} and {x_cf.shape}")
    if x.shape[1:] != tuple(model.input_shape):
        raise ValueError(f"the model takes inputs of shape {model.input_shape}; the pairs have {x.shape[1:]}")
    for name, a in (("x", x), ("x_cf", x_cf)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN/inf values")
    apply, params = functional(model)
    info = site_info(model)
    sites = list(sites) if sites is not None else hidden_sites(model)
    unknown = [s for s in sites if s not in info]
    if unknown:
        raise ValueError(f"unknown sites {unknown}; the model's sites are {list(info)}")
    t = time.perf_counter()
    out, pcs, total = {}, {}, 0.0
    for s in sites:
        pc = info[s].per_channel if per_channel is None else per_channel
        num, mag, den = jax.device_get(_site_scores(params, jnp.asarray(x), jnp.asarray(x_cf), apply=apply, site=s,
                                                    per_channel=pc, output=output, chunk=chunk))
        den = float(den)
        out[s] = {"restored": np.asarray(num) / den if den > 0 else np.zeros_like(num), "magnitude": np.asarray(mag)}
        pcs[s] = pc
        total = den / len(x)
    return Interchange(out, pcs, output, int(len(x)), float(total), {"interchange": time.perf_counter() - t})


__all__ = ["Interchange", "interchange"]
