"""Causal attribution of input features (Chattopadhyay et al., ICML 2019).

For feature ``i`` and value ``α``, the interventional expectation ``E[y | do(x_i = α)]`` is the mean
output over the data with ``x_i`` set to ``α`` (the other features keep their observed, jointly
distributed values). ``ACE_i(α) = E[y | do(x_i = α)] − baseline_i``, where ``baseline_i`` is the mean
of the interventional expectations over the α grid (the paper's choice). Two estimators:

* ``exact``: interventional sampling over the data — one program vmapped over features × values.
* ``taylor``: the paper's second-order approximation around the intervened mean,
  ``E[y | do(x_i = α)] ≈ f(μ_α) + ½ tr(∇²f(μ_α) Σ_α)`` with ``μ_α`` the data mean with ``μ_i = α`` and
  ``Σ_α`` the data covariance with row and column ``i`` zeroed. Exact for models linear in the input.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrepair.models import Network, functional


@dataclasses.dataclass
class InputACE:
    """Per feature × value × output interventional expectations and ACE."""

    features: list[str]
    alphas: np.ndarray  # [F, V]
    expectation: np.ndarray  # [F, V, O]  E[y | do(x_i = α)]
    method: str
    num_samples: int
    timings: dict
    valid: np.ndarray | None = None  # [F, V]: False where a short (categorical) grid was padded

    @property
    def ace(self) -> np.ndarray:
        """``E[y | do(x_i=α)] − mean_α E[y | do(x_i=α)]`` (mean over each feature's own values): [F, V, O]."""
        w = np.ones(self.alphas.shape) if self.valid is None else self.valid.astype(np.float64)
        base = (self.expectation * w[..., None]).sum(1, keepdims=True) / w.sum(1)[:, None, None]
        return self.expectation - base

    def importance(self, output: int) -> np.ndarray:
        """Spread of the ACE curve per feature (max − min over α) for one output: [F]."""
        a = self.ace[:, :, output]  # padded entries repeat a valid value, so max/min are unaffected
        return a.max(axis=1) - a.min(axis=1)

    def ranking(self, output: int) -> list[tuple[str, float]]:
        imp = self.importance(output)
        return [(self.features[i], float(imp[i])) for i in np.argsort(-imp, kind="stable")]

    def to_json(self, *, output: int | None = None) -> dict:
        outs = range(self.expectation.shape[-1]) if output is None else [output]
        return {
            "method": self.method,
            "num_samples": self.num_samples,
            "features": self.features,
            "alphas": self.alphas.tolist(),
            "ace": {str(o): self.ace[:, :, o].tolist() for o in outs},
            "ranking": {str(o): self.ranking(o) for o in outs},
            "timings": self.timings,
        }


def _grid(x: np.ndarray, num_values: int) -> tuple[np.ndarray, np.ndarray]:
    """α grid per feature: its distinct values when there are at most ``num_values`` (categorical;
    padded with the last value, marked invalid), else evenly spaced over the observed range."""
    out = np.empty((x.shape[1], num_values), np.float32)
    valid = np.ones((x.shape[1], num_values), bool)
    for i in range(x.shape[1]):
        u = np.unique(x[:, i])
        if len(u) <= num_values:
            out[i] = np.concatenate([u, np.full(num_values - len(u), u[-1])])
            valid[i, len(u):] = False
        else:
            out[i] = np.linspace(u[0], u[-1], num_values)
    return out, valid


@jax.jit(static_argnames=("apply", "chunk"))
def _exact(params, x, features, alphas, *, apply, chunk):
    def one_feature(args):
        i, al = args

        def at(a):
            return jnp.mean(apply(params, x.at[:, i].set(a)), axis=0)

        return jax.vmap(at)(al)

    return lax.map(one_feature, (features, alphas), batch_size=chunk)


@jax.jit(static_argnames=("apply",))
def _taylor(params, mu, cov, features, alphas, *, apply):
    def f(z):
        return apply(params, z[None])[0]

    def one(i, a):
        m = mu.at[i].set(a)
        keep = jnp.arange(mu.shape[0]) != i
        c = cov * keep[:, None] * keep[None, :]
        hess = jax.hessian(f)(m)  # [O, D, D]
        return f(m) + 0.5 * jnp.einsum("odk,dk->o", hess, c)

    return jax.vmap(lambda i, al: jax.vmap(lambda a: one(i, a))(al))(features, alphas)


def input_ace(
    model: Network,
    x,
    *,
    features=None,
    feature_names=None,
    num_values: int = 16,
    method: str = "exact",
    alphas=None,
    chunk: int | None = None,
) -> InputACE:
    """ACE of input features on every output.

    Args:
      model: a network with a flat input (tabular); for images pass flattened features of a model
        that flattens first, or use ``features=`` to pick pixels.
      x: data ``[N, D]`` (the interventional distribution of the other features).
      features: indices of the features to attribute (default: all).
      num_values: α values per feature (distinct values are used for features with fewer).
      method: ``"exact"`` (interventional sampling) or ``"taylor"`` (second-order approximation).
      alphas: explicit ``[F, V]`` grid instead of the default.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"input_ace needs flat inputs [N, D]; got shape {x.shape}")
    if tuple(model.input_shape) != (x.shape[1],):
        raise ValueError(f"the model takes inputs of shape {model.input_shape}, the data has {x.shape[1:]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the data contains NaN/inf values")
    if method not in ("exact", "taylor"):
        raise ValueError(f"unknown method {method!r}; use 'exact' or 'taylor'")
    feats = np.arange(x.shape[1]) if features is None else np.asarray(features, np.int32)
    if feats.size == 0 or feats.min() < 0 or feats.max() >= x.shape[1]:
        raise IndexError(f"feature indices must be in [0, {x.shape[1]}); got {feats.tolist()}")
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(x.shape[1])]
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} feature names for {x.shape[1]} features")
    if alphas is None:
        al, valid = _grid(x, num_values)
        al, valid = al[feats], valid[feats]
    else:
        al = np.asarray(alphas, np.float32)
        valid = np.ones(al.shape, bool)
    if al.shape[0] != len(feats):
        raise ValueError(f"alphas has {al.shape[0]} rows for {len(feats)} features")
    apply, params = functional(model)
    t = time.perf_counter()
    if method == "exact":
        out_size = int(np.prod(jax.eval_shape(lambda z: apply(params, z), jnp.zeros((1, x.shape[1]))).shape[1:]))
        per_feature = x.shape[0] * al.shape[1] * max(out_size, x.shape[1]) * 4
        chunk = chunk or max(1, min(len(feats), int(256e6 // max(per_feature, 1))))
        e = _exact(params, jnp.asarray(x), jnp.asarray(feats), jnp.asarray(al), apply=apply, chunk=chunk)
    else:
        mu = x.mean(0)
        cov = np.cov(x, rowvar=False, bias=True).reshape(x.shape[1], x.shape[1])
        e = _taylor(params, jnp.asarray(mu), jnp.asarray(cov, jnp.float32), jnp.asarray(feats), jnp.asarray(al), apply=apply)
    e = np.asarray(jax.device_get(e), np.float64)
    return InputACE([names[i] for i in feats], al, e, method, int(x.shape[0]), {"ace": time.perf_counter() - t}, valid)


def plot_input_ace(res: InputACE, path, *, output: int, top: int = 12):
    """Ranked bar chart of feature importance and the top features' ACE curves for one output."""
    from jaxrepair import records

    plt = records.pyplot()
    if plt is None:
        return None
    rank = res.ranking(output)[:top]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.barh([r[0] for r in rank][::-1], [r[1] for r in rank][::-1], color="tab:blue")
    ax1.set_xlabel(f"ACE spread on output {output}")
    ax1.set_title(f"input-feature ACE ({res.method})")
    idx = {n: i for i, n in enumerate(res.features)}
    for name, _ in rank[: min(5, len(rank))]:
        i = idx[name]
        ok = res.valid[i] if res.valid is not None else np.ones(res.alphas.shape[1], bool)
        a = res.alphas[i][ok]
        span = float(a.max() - a.min()) or 1.0
        ax2.plot((a - a.min()) / span, res.ace[i, :, output][ok], marker="o", ms=3,
                 label=f"{name} [{a.min():.3g}, {a.max():.3g}]")
    ax2.set_xlabel("α, as a fraction of the feature's range (range in the legend)")
    ax2.set_ylabel("ACE")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return records.save_figure(fig, path)


__all__ = ["InputACE", "input_ace", "plot_input_ace"]


@dataclasses.dataclass
class FeatureACE:
    """Interventional expectations of every output under ``do(feature = v)`` for each value ``v``."""

    values: np.ndarray  # [V]
    expectation: np.ndarray  # [V, O]  E[y | do(feature = v)]
    output: str
    num_samples: int

    @property
    def ace(self) -> np.ndarray:
        """``E[y | do(feature = v)] − mean_v E[y | do(feature = v)]``: [V, O]."""
        return self.expectation - self.expectation.mean(0, keepdims=True)

    def matched(self, classes) -> float:
        """Mean ACE of value ``i`` on output ``classes[i]``: how much setting the feature to the value
        that goes with a class raises that class (a spurious colour → label shortcut)."""
        classes = np.asarray(classes)
        return float(np.mean(self.ace[np.arange(len(self.values)), classes]))

    def to_json(self) -> dict:
        return {"values": self.values.tolist(), "output": self.output, "num_samples": self.num_samples,
                "expectation": self.expectation.tolist(), "ace": self.ace.tolist()}


@jax.jit(static_argnames=("apply", "do", "output"))
def _do_sums(params, x, values, *, apply, do, output):
    def at(v):
        out = apply(params, do(x, v))
        return jnp.sum(jax.nn.softmax(out, axis=-1) if output == "prob" else out, axis=0)

    return lax.map(at, values)


def feature_ace(model, x, do, values, *, params=None, output: str = "prob", batch_size: int = 512) -> FeatureACE:
    """ACE of a feature that is not one input column — a border's colour, a patch, a watermark — on
    every output: ``do(x, v)`` returns the batch ``x`` with the feature set to ``v`` (a pure, hashable
    function, e.g. a frozen dataclass's method), for each of ``values``; the other features keep their
    observed values. ``model``: a network, or an ``apply(params, x)`` with ``params=``."""
    if output not in ("prob", "logit"):
        raise ValueError(f"output must be 'prob' or 'logit', got {output!r}")
    if isinstance(model, Network):
        apply, params = functional(model)
    elif params is None:
        raise ValueError("feature_ace: pass params= with an apply function")
    else:
        apply = model
    values = jnp.asarray(values)
    x = np.asarray(x, np.float32)
    if len(x) == 0 or values.ndim != 1 or len(values) < 2:
        raise ValueError(f"feature_ace needs examples and at least two values; got {len(x)} examples, "
                         f"values of shape {tuple(values.shape)}")
    total = 0.0
    for i in range(0, len(x), batch_size):
        total = total + _do_sums(params, jnp.asarray(x[i: i + batch_size]), values, apply=apply, do=do, output=output)
    return FeatureACE(np.asarray(values), np.asarray(total) / len(x), output, int(len(x)))
