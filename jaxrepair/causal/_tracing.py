"""Causal tracing (Meng et al., "Locating and editing factual associations in GPT", NeurIPS 2022):
which (layer, token position) carries the computation that gives the answer.

Three runs per input: the clean run; a corrupted run (Gaussian noise of ``noise`` × the site's
standard deviation added to the embeddings of the corrupted positions, as ROME's code adds
``3 × std`` of the token embeddings, or a corrupted input the caller gives, e.g. the clean image of a
triggered one); and for every traced site ``s`` and position ``t`` the corrupted run with ``s`` at
``t`` restored to its clean value. A (site, position)'s score is its *indirect effect*: the mean over
inputs and noise samples of ``P_restored(target) − P_corrupted(target)``. Every site × position of
the grid is one compiled program, positions vmapped, noise samples and inputs batched.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.causal._ace import Neuron
from jaxrepair.interventions import Intervention
from jaxrepair.models import Network, check_finite, functional, resume, run, sites as site_info


@dataclasses.dataclass
class CausalTrace:
    """Indirect effects ``{site: [positions]}`` of restoring each (site, position) from the clean run."""

    effects: dict
    p_clean: float
    p_corrupt: float
    corrupt_site: str
    samples: int
    num_inputs: int
    timings: dict

    def ranking(self) -> list[Neuron]:
        """(site, position) pairs by indirect effect, largest first. A :class:`Neuron`'s ``unit`` is
        here a token *position* of the site, not a channel."""
        rows = [Neuron(s, int(t), float(v)) for s, vals in self.effects.items() for t, v in enumerate(vals)]
        return sorted(rows, key=lambda n: -n.score)

    def top(self, k: int) -> list[Neuron]:
        return self.ranking()[:k]

    def to_json(self) -> dict:
        return {"method": "causal tracing (Meng et al. 2022)", "p_clean": self.p_clean, "p_corrupt": self.p_corrupt,
                "corrupt_site": self.corrupt_site, "samples": self.samples, "num_inputs": self.num_inputs,
                "effects": {s: np.asarray(v).tolist() for s, v in self.effects.items()}, "timings": self.timings}

    def plot(self, path=None):
        """A layers × positions heat map of the indirect effects; saved to ``path`` if given."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        grid = np.stack([np.asarray(v) for v in self.effects.values()])
        fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * grid.shape[1] + 2), 0.45 * grid.shape[0] + 1.6))
        im = ax.imshow(grid, aspect="auto", cmap="Purples")
        ax.set_yticks(range(grid.shape[0]), list(self.effects))
        ax.set_xlabel("token position")
        ax.set_title(f"Causal tracing: P(target) restored − corrupted\n(original run {self.p_clean:.3f}, "
                     f"corrupted {self.p_corrupt:.3f}; {self.num_inputs} inputs × {self.samples} samples)", fontsize=9)
        fig.colorbar(im, ax=ax, label="indirect effect")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
        return fig


@jax.jit(static_argnames=("graph", "sites", "corrupt_site"))
def _trace(params, x, target, noise, x_corrupt, *, graph, sites, corrupt_site):
    """``noise`` [samples, n, *site shape] added at ``corrupt_site`` (or ``x_corrupt`` run as it is
    when ``corrupt_site`` is None). Returns (p_clean, p_corrupt, {site: [positions]})."""
    clean = run(graph, params, x, all_sites=True)

    def prob(logits):
        return jnp.take_along_axis(jax.nn.softmax(logits, -1), target[:, None], 1)[:, 0]

    def corrupted_env(eps):
        if corrupt_site is None:
            return run(graph, params, x_corrupt, all_sites=True)
        iv = {corrupt_site: Intervention(jnp.ones((), bool), jnp.ones(()), eps)}
        return run(graph, params, x, iv, all_sites=True)

    def one_sample(eps):
        env = corrupted_env(eps)
        p_bad = prob(env[graph.output])
        out = {}
        for s in sites:
            positions = env[s].shape[1]

            def restore(t, s=s):
                at = (jnp.arange(positions) == t).reshape((1, -1) + (1,) * (env[s].ndim - 2))
                y = resume(graph, params, env, overrides={s: jnp.where(at, clean[s], env[s])})
                return jnp.mean(prob(y) - p_bad)

            out[s] = jax.vmap(restore)(jnp.arange(positions))
        return jnp.mean(p_bad), out

    p_bad, effects = jax.lax.map(one_sample, noise)
    return jnp.mean(prob(clean[graph.output])), jnp.mean(p_bad), jax.tree.map(lambda v: jnp.mean(v, 0), effects)


def causal_trace(
    model: Network,
    x,
    *,
    target=None,
    sites=None,
    x_corrupt=None,
    corrupt_site: str | None = None,
    positions=None,
    noise: float = 3.0,
    samples: int = 10,
    seed: int = 0,
) -> CausalTrace:
    """Traces which (site, position) restores the model's answer on ``x``.

    Args:
      target: the class whose probability is measured, per input or one for all (default: the clean
        prediction).
      sites: the sites traced, each of shape ``[positions, ...]`` (default: every transformer block's
        output, ``blk1``, ``blk2``, …, i.e. the residual stream).
      x_corrupt: a corrupted input per clean input (then no noise is drawn and ``samples`` is 1);
        else ``noise`` × the standard deviation of ``corrupt_site``'s values on ``x`` (default: the
        site ``embed``, the token embeddings) is added at ``positions`` (default: all).
      samples: noise draws per input (ROME's code: 10).
    """
    apply, params = functional(model)
    graph = apply.graph
    info = site_info(model)
    x = np.asarray(x, np.float32)
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(graph.input_shape):
        raise ValueError(f"x has per-example shape {tuple(x.shape[1:])}, the model expects {graph.input_shape}")
    check_finite(x, "x")
    if sites is None:
        sites = [s for s in info if s.startswith("blk") and s[3:].isdigit()]
        if not sites:
            raise ValueError("the model has no transformer blocks (sites blk1, blk2, …): name the sites to trace")
    sites = tuple(sites)
    unknown = [s for s in sites if s not in info]
    if unknown:
        raise ValueError(f"unknown sites {unknown}; the model's sites are {list(info)}")
    flat = [s for s in sites if len(info[s].shape) < 2]
    if flat:
        raise ValueError(f"sites {flat} have no position axis (shapes {[info[s].shape for s in flat]})")
    need_clean = target is None or x_corrupt is None  # the default target, the noise's scale
    clean = apply.sites(params, jnp.asarray(x)) if need_clean else None  # one host-side pass for both
    if target is None:
        target = np.argmax(np.asarray(clean[graph.output]), -1)
    target = np.broadcast_to(np.asarray(target, np.int32), (len(x),))
    if target.min() < 0 or target.max() >= int(np.prod(info[graph.output].shape)):
        raise ValueError(f"target class {int(target.max())} is not an output of the model")
    t0 = time.perf_counter()
    if x_corrupt is not None:
        x_corrupt = np.asarray(x_corrupt, np.float32)
        if x_corrupt.shape != x.shape:
            raise ValueError(f"x_corrupt has shape {x_corrupt.shape}, x has {x.shape}")
        check_finite(x_corrupt, "x_corrupt")
        corrupt, noise_arr, samples = None, jnp.zeros((1,)), 1
    else:
        corrupt = corrupt_site or ("embed" if "embed" in info else "input")
        if corrupt not in info:
            raise ValueError(f"unknown corrupt_site {corrupt!r}; the model's sites are {list(info)}")
        if samples < 1 or not np.isfinite(noise) or noise <= 0:
            raise ValueError(f"need samples >= 1 and a positive noise scale; got samples={samples}, noise={noise}")
        shape = info[corrupt].shape
        sigma = noise * float(np.asarray(clean[corrupt]).std())
        eps = sigma * jax.random.normal(jax.random.key(seed), (samples, len(x), *shape))
        if positions is not None:
            at = np.zeros(shape[0], bool)
            at[np.asarray(positions)] = True
            eps = eps * jnp.asarray(at).reshape((1, 1, -1) + (1,) * (len(shape) - 1))
        noise_arr, x_corrupt = eps, x
    p_clean, p_bad, effects = jax.device_get(_trace(params, jnp.asarray(x), jnp.asarray(target), noise_arr,
                                                    jnp.asarray(x_corrupt), graph=graph, sites=sites,
                                                    corrupt_site=corrupt))
    return CausalTrace({s: np.asarray(effects[s]) for s in sites}, float(p_clean), float(p_bad),
                       corrupt or "x_corrupt", int(samples), int(len(x)), {"trace": time.perf_counter() - t0})


__all__ = ["CausalTrace", "causal_trace"]
