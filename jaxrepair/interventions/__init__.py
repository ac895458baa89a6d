"""Interventions — the do-operator — as data.

An :class:`Intervention` on a site rewrites the selected units as ``h ← scale·h + shift`` and leaves
the rest untouched. That one affine form covers every kind:

==========  =====================  ======  ======
kind        meaning                scale   shift
==========  =====================  ======  ======
``set``     ``do(h_j = α)``        0       α
``zero``    ablate                 0       0
``scale``   ``h_j ← s·h_j``        s       0
``add``     ``h_j ← h_j + d``      1       d
==========  =====================  ======  ======

so a batch of mixed kinds is still one pytree with a leading axis, evaluated by one ``vmap``.
An intervention *map* is ``{site_name: Intervention}``; ``{}`` or ``None`` is the empty intervention
and gives exactly the un-intervened output. Arrays broadcast against the site's value
``[batch, *site_shape]``, so a per-channel mask of a conv site has shape ``[1, 1, C]`` and a
per-example value (interchange interventions) has a leading batch axis.

Depends on nothing but jax: :func:`evaluate` takes a model's ``apply`` (``jr.functional(model)[0]``),
whose ``sites``/``resume`` methods do the evaluation, so :mod:`jaxrepair.models` imports this package
and not the other way round.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("set", "zero", "scale", "add")


class Intervention(NamedTuple):
    """``h ← where(mask, scale·h + shift, h)``; fields broadcast against ``[batch, *site_shape]``."""

    mask: jax.Array  # bool
    scale: jax.Array
    shift: jax.Array


def apply_intervention(h: jax.Array, iv: Intervention) -> jax.Array:
    return jnp.where(iv.mask, h * iv.scale + iv.shift, h)


def unit_mask(site_shape: Sequence[int], units, *, per_channel: bool = False, positions=None) -> np.ndarray:
    """Boolean mask selecting ``units`` of a site.

    Units index the flattened site (``prod(site_shape)`` units), or its channels (last axis) when
    ``per_channel``; the mask then has shape ``[1, …, 1, C]`` so the whole feature map is selected.
    ``positions`` (with ``per_channel``) restricts the channels to those indices of the site's first
    axis — token positions of a ``[tokens, units]`` site — and the mask is ``[tokens, 1, …, C]``.
    """
    site_shape = tuple(int(s) for s in site_shape)
    if positions is not None:
        if not per_channel or len(site_shape) < 2:
            raise ValueError(f"positions select along a site's first axis: they need per_channel=True and a site "
                             f"of more than one axis (this one has shape {site_shape})")
        pos = np.atleast_1d(np.asarray(positions, np.int64))
        if pos.size == 0 or pos.min() < 0 or pos.max() >= site_shape[0]:
            raise IndexError(f"positions {pos.tolist()} are out of range for a site with {site_shape[0]} positions")
        at = np.zeros(site_shape[0], bool)
        at[pos] = True
        channels = unit_mask(site_shape, units, per_channel=True)
        return at.reshape((-1,) + (1,) * (len(site_shape) - 1)) & channels
    n = site_shape[-1] if per_channel else int(np.prod(site_shape))
    idx = np.atleast_1d(np.asarray(units))
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ValueError(f"boolean unit mask has shape {idx.shape}, the site has {n} units")
        idx = np.flatnonzero(idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"unit index {int(idx.max() if idx.max() >= n else idx.min())} is out of range for a site with {n} units (shape {site_shape})")
    mask = np.zeros(n, bool)
    mask[idx] = True
    if per_channel:
        return mask.reshape((1,) * (len(site_shape) - 1) + (n,))
    return mask.reshape(site_shape)


def make(kind: str, site_shape, units, value=0.0, *, per_channel: bool = False, positions=None) -> Intervention:
    """Builds one intervention of ``kind`` (``set``, ``zero``, ``scale``, ``add``) on ``units``
    (at ``positions`` only, for a token site; see :func:`unit_mask`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown intervention kind {kind!r}; choose one of {KINDS}")
    mask = jnp.asarray(unit_mask(site_shape, units, per_channel=per_channel, positions=positions))
    value = jnp.asarray(value, jnp.float32)
    one, zero = jnp.ones_like(value), jnp.zeros_like(value)
    scale, shift = {
        "set": (zero, value),
        "zero": (zero, zero),
        "scale": (value, zero),
        "add": (one, value),
    }[kind]
    return Intervention(mask, scale, shift)


def do(site_shape, units, value, **kw) -> Intervention:
    """``do(h_units = value)``."""
    return make("set", site_shape, units, value, **kw)


def stack(interventions: Sequence[Intervention]) -> Intervention:
    """Stacks interventions on one site into a batch (leading axis)."""
    b = [jnp.broadcast_arrays(*iv) for iv in interventions]
    return Intervention(*(jnp.stack(parts) for parts in zip(*b)))


def evaluate(apply, params, x: jax.Array, interventions: Mapping[str, Intervention]) -> jax.Array:
    """Evaluates a *batch* of intervention maps (leading axis on every leaf) with one vmapped call.

    The sites not downstream of an intervened site — in particular every layer before it — are
    computed once for the input batch and shared by all interventions.

    Returns:
        ``[num_interventions, batch, *output_shape]``.
    """
    return _evaluate(apply, params, x, dict(interventions))


@jax.jit(static_argnums=0)
def _evaluate(apply, params, x, interventions):
    env = apply.sites(params, x)
    return jax.vmap(lambda iv: apply.resume(params, env, iv))(interventions)
