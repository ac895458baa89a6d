"""Search spaces: what a repair solution is, how it changes the model, and how it is folded back.

A space is split the way ``jit`` needs it. The space object itself is static and hashable: the
graph, the *candidate* sites a selection may draw from, and ``k_max`` slots. Which neurons are
selected is data — :class:`Slots` (a site index and a unit index per slot, ``-1`` for an empty
slot) — so a new selection, or any ``k ≤ k_max``, runs the same compiled program.

A solution is a flat vector of ``k_max × slot_dims`` numbers (what evosax searches). ``realize``
turns it into the modified ``(params, intervention)`` pair the objective evaluates; ``fold`` (on the
host) returns plain params of a normal model computing the same function; ``unflatten`` gives a
readable ``{site: values}`` view of the selected neurons only.

* :class:`FactorSpace` — CARE: one multiplicative factor per selected neuron (per channel on conv
  sites), applied as the intervention ``h_j ← f_j·h_j`` and folded into the outgoing weights (dense
  consumers), into the producing dense/conv/batchnorm layer (pre-activation sites, any sign), or
  through a positively homogeneous activation into the incoming ones (factors ≥ 0).
* :class:`DeltaSpace` — additive deltas on a selected neuron's incoming weights and bias and its
  outgoing weights (dense → activation → dense sites), bounded by ``±bound × std`` of each layer.

Every candidate site carries an intervention (units outside the selection get factor 1, which
leaves them bit-for-bit unchanged), so everything upstream of the first *candidate* site is
computed once and shared by all particles: pass fewer ``sites`` to share more.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.interventions import Intervention
from jaxrepair.models import ELEMENTWISE, Graph, channel_units

# Activations with act(c·z) = c·act(z) for c ≥ 0: factors can be folded into the incoming weights.
_HOMOGENEOUS = {"relu", "leaky_relu", "identity"}


class Slots(NamedTuple):
    """The selected neurons as data: ``site[i]`` indexes the space's candidate sites (-1: empty slot)."""

    site: jax.Array  # [k_max] int32
    unit: jax.Array  # [k_max] int32


@dataclasses.dataclass(frozen=True)
class Neurons:
    """Selected units of one site (channels when ``per_channel``)."""

    site: str
    units: tuple[int, ...]
    shape: tuple[int, ...]  # the site's per-example shape
    per_channel: bool = False


def group(selection: Sequence[tuple[str, int]], site_info: dict, per_channel: bool | None = None) -> tuple[Neurons, ...]:
    """``[(site, unit), ...]`` → one :class:`Neurons` per site, in first-seen order (checked)."""
    by_site: dict[str, list[int]] = {}
    for s, u in selection:
        if s not in site_info:
            raise ValueError(f"unknown site {s!r}; the model's sites are {list(site_info)}")
        by_site.setdefault(s, [])
        if int(u) not in by_site[s]:
            by_site[s].append(int(u))
    out = []
    for s, us in by_site.items():
        shape = tuple(site_info[s].shape)
        pc = channel_units(shape) if per_channel is None else per_channel
        n = shape[-1] if pc else math.prod(shape)
        bad = [u for u in us if not 0 <= u < n]
        if bad:
            raise IndexError(f"site {s!r} has {n} units; selected units {bad} are out of range")
        out.append(Neurons(s, tuple(us), shape, pc))
    return tuple(out)


def chain_up(graph: Graph, site: str):
    """``(producer, [elementwise nodes])``: walks from ``site`` back through single-input
    element-wise nodes to the node that produced the values (each step read by nothing else)."""
    chain, cur = [], graph.node(site)
    while cur.op in ELEMENTWISE and len(cur.inputs) == 1:
        chain.append(cur)
        prev = cur.inputs[0]
        if prev == "input" or len(graph.consumers(prev)) != 1:
            return None, chain
        cur = graph.node(prev)
    return cur, chain


def merged_heads(graph: Graph, site: str):
    """For a ``heads`` site ([tokens, head_dim, heads]) merged back as a builder does — transposed
    to [tokens, heads, head_dim], reshaped to [tokens, heads·head_dim] — the dense layers reading the
    merged values; else None."""
    if graph.node(site).op != "heads":
        return None
    t = graph.consumers(site)
    if len(t) != 1 or t[0].op != "transpose" or tuple(t[0].attr.get("perm", ())) != (0, 2, 1):
        return None
    r = graph.consumers(t[0].name)
    if len(r) != 1 or r[0].op != "reshape":
        return None
    return dense_consumers(graph, r[0].name)


def dense_consumers(graph: Graph, site: str):
    """The dense layers reading ``site`` when nothing else reads it, else None."""
    cons = graph.consumers(site)
    if cons and all(c.op == "dense" and c.inputs == (site,) for c in cons):
        return cons
    return None


@dataclasses.dataclass(frozen=True)
class SiteSlot:
    """A candidate site of a space (static)."""

    name: str
    shape: tuple[int, ...]
    per_channel: bool
    src: str = ""  # delta: the dense layer producing the site
    dsts: tuple[str, ...] = ()  # delta: the dense layers reading it
    fan_in: int = 0
    fan_out: tuple[int, ...] = ()

    @property
    def num_units(self) -> int:
        return self.shape[-1] if self.per_channel else math.prod(self.shape)


class Space(Protocol):
    """What a repair space provides; :class:`FactorSpace` and :class:`DeltaSpace` implement it."""

    kind: str
    sites: tuple[SiteSlot, ...]
    k_max: int

    @property
    def num_dims(self) -> int: ...

    def slots(self, selection: Sequence[tuple[str, int]]) -> Slots: ...

    def bounds(self, params, slots: Slots, bounds) -> tuple[np.ndarray, np.ndarray]: ...

    def identity(self) -> np.ndarray: ...

    def realize(self, params, slots: Slots, flat: jax.Array) -> tuple[dict, dict]: ...

    def fold(self, params, slots: Slots, flat) -> dict: ...

    def unflatten(self, slots: Slots, flat) -> dict: ...


def _slots(sites: tuple[SiteSlot, ...], k_max: int, selection) -> Slots:
    """Slots in :func:`group`'s order (sites in first-seen order, units in order within a site)."""
    index = {s.name: i for i, s in enumerate(sites)}
    order = list(dict.fromkeys(s for s, _ in selection))
    selection = sorted(selection, key=lambda su: order.index(su[0]))
    seen, site, unit = set(), [], []
    for s, u in selection:
        if s not in index:
            raise ValueError(f"site {s!r} is not a candidate site of this repair space; candidates: {list(index)}")
        u = int(u)
        n = sites[index[s]].num_units
        if not 0 <= u < n:
            raise IndexError(f"site {s!r} has {n} units; selected unit {u} is out of range")
        if (s, u) in seen:
            continue
        seen.add((s, u))
        site.append(index[s])
        unit.append(u)
    if len(site) > k_max:
        raise ValueError(f"{len(site)} neurons selected, but the space holds at most k_max={k_max}")
    pad = k_max - len(site)
    return Slots(np.asarray(site + [-1] * pad, np.int32), np.asarray(unit + [0] * pad, np.int32))


def _active(slots: Slots) -> list[tuple[int, int, int]]:
    """Host view: ``[(slot, site index, unit)]`` of the filled slots."""
    s, u = np.asarray(slots.site), np.asarray(slots.unit)
    return [(i, int(s[i]), int(u[i])) for i in range(len(s)) if s[i] >= 0]


def _scatter(n: int, site_idx: int, slots: Slots, values: jax.Array, fill: float) -> jax.Array:
    """``[n]`` vector: ``fill`` everywhere, ``values[i]`` at the units of the slots on this site."""
    idx = jnp.where(slots.site == site_idx, slots.unit, n)  # other slots point past the end: dropped
    return jnp.full(n, fill, values.dtype).at[idx].set(values, mode="drop")


@dataclasses.dataclass(frozen=True)
class FactorSpace:
    """CARE's parameterisation: a factor per selected neuron (1 = unchanged)."""

    graph: Graph
    sites: tuple[SiteSlot, ...]
    k_max: int
    kind: str = "factor"

    @staticmethod
    def build(graph: Graph, site_info: dict, sites: Sequence[str], k_max: int) -> "FactorSpace":
        slots = []
        for s in sites:
            if s not in site_info:
                raise ValueError(f"unknown site {s!r}; the model's sites are {list(site_info)}")
            shape = tuple(site_info[s].shape)
            slots.append(SiteSlot(s, shape, channel_units(shape)))
        return FactorSpace(graph, tuple(slots), int(k_max))

    @property
    def slot_dims(self) -> int:
        return 1

    @property
    def num_dims(self) -> int:
        return self.k_max

    def slots(self, selection) -> Slots:
        return _slots(self.sites, self.k_max, selection)

    def identity(self) -> np.ndarray:
        return np.ones(self.num_dims, np.float32)

    def bounds(self, params, slots: Slots, bounds=(0.0, 2.0)) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = (float(b) for b in bounds)
        if not lo < hi:
            raise ValueError(f"factor bounds need LOW < HIGH, got {bounds}")
        on = np.asarray(slots.site) >= 0
        return np.where(on, lo, 1.0).astype(np.float32), np.where(on, hi, 1.0).astype(np.float32)

    def realize(self, params, slots: Slots, flat: jax.Array):
        iv = {}
        for i, s in enumerate(self.sites):
            scale = _scatter(s.num_units, i, slots, flat, 1.0)
            if not s.per_channel:
                scale = scale.reshape(s.shape)
            iv[s.name] = Intervention(jnp.ones((), bool), scale, jnp.zeros((), scale.dtype))
        return params, iv

    def unflatten(self, slots: Slots, flat) -> dict:
        flat = np.asarray(flat)
        out: dict = {}
        for i, si, _ in _active(slots):
            out.setdefault(self.sites[si].name, []).append(float(flat[i]))
        return {k: np.asarray(v, np.float32) for k, v in out.items()}

    def factors(self, slots: Slots, flat) -> dict[str, np.ndarray]:
        """``{site: [units]}`` full factor vectors of the sites with a selected neuron."""
        flat = np.asarray(flat, np.float32)
        out: dict = {}
        for i, si, u in _active(slots):
            s = self.sites[si]
            out.setdefault(s.name, np.ones(s.num_units, np.float32))[u] = flat[i]
        return out

    def fold(self, params, slots: Slots, flat):
        """Plain params computing the same function as ``realize`` (factors folded into weights)."""
        return fold_factors(self.graph, params, {s.name: s for s in self.sites}, self.factors(slots, flat))


def fold_factors(graph: Graph, params, site_slots: dict, factors: dict[str, np.ndarray]):
    """Folds ``{site: full factor vector}`` into the weights (see the module docstring)."""
    params = {k: dict(v) for k, v in jax.device_get(params).items()}
    for site, full in factors.items():
        s = site_slots[site]
        # a dense layer over tokens reads a [tokens, units] site per channel: its rows are the units
        cons = dense_consumers(graph, site) if len(s.shape) == 1 or s.per_channel else None
        merged = merged_heads(graph, site)
        if merged is not None:  # attention heads: head h is rows h·d … (h+1)·d of the output projection
            for c in merged:
                params[c.name]["kernel"] = np.asarray(params[c.name]["kernel"]) * np.repeat(full, s.shape[-2])[:, None]
            continue
        if cons is None and s.per_channel:
            # per-channel factors commute with global average pooling: fold into the dense rows after it
            pools = graph.consumers(site)
            if pools and all(c.op == "global_avgpool" and not c.attr.get("keepdims") for c in pools):
                dense = [dense_consumers(graph, c.name) for c in pools]
                if all(d is not None for d in dense):
                    cons = tuple(c for d in dense for c in d)
        if cons is not None:
            for c in cons:
                params[c.name]["kernel"] = np.asarray(params[c.name]["kernel"]) * full[:, None]
            continue
        prod, chain = chain_up(graph, site)
        homogeneous = all(c.op in _HOMOGENEOUS for c in chain)
        if prod is None or not homogeneous or prod.op not in ("dense", "conv2d", "batchnorm"):
            raise ValueError(
                f"cannot fold factors on site {site!r} into weights: its consumers are not dense layers and "
                f"it is not a ReLU-like activation of a dense/conv/batchnorm node"
            )
        if chain and np.any(full < 0):
            raise ValueError(f"negative factors on site {site!r} cannot be folded through {chain[0].op}")
        p = params[prod.name]
        if prod.op == "batchnorm":
            p["scale"] = np.asarray(p["scale"]) * full
            p["bias"] = np.asarray(p["bias"]) * full
        else:
            p["kernel"] = np.asarray(p["kernel"]) * full  # last axis = output units / channels
            if "bias" in p:
                p["bias"] = np.asarray(p["bias"]) * full
    return params


@dataclasses.dataclass(frozen=True)
class DeltaSpace:
    """Additive deltas on selected neurons' incoming weights + bias and outgoing weights.

    A slot holds ``max fan-in + 1 + max total fan-out`` numbers, laid out ``[in | bias | out]``;
    the part a site does not use is pinned to 0 by its bounds. Each delta is bounded by
    ``±bound × std`` of the layer's kernel. Needs dense → element-wise → dense sites.
    """

    graph: Graph
    sites: tuple[SiteSlot, ...]
    k_max: int
    kind: str = "delta"

    @staticmethod
    def build(graph: Graph, site_info: dict, sites: Sequence[str], k_max: int, params) -> "DeltaSpace":
        slots = []
        for s in sites:
            if s not in site_info:
                raise ValueError(f"unknown site {s!r}; the model's sites are {list(site_info)}")
            prod, _ = chain_up(graph, s)
            dsts = dense_consumers(graph, s)
            if len(site_info[s].shape) != 1 or prod is None or prod.op != "dense" or dsts is None:
                raise ValueError(f"delta repair needs a dense → activation → dense site; {s!r} is not one "
                                 f"(use the factor parameterisation there)")
            slots.append(SiteSlot(s, tuple(site_info[s].shape), False, prod.name, tuple(d.name for d in dsts),
                                  int(np.shape(params[prod.name]["kernel"])[0]),
                                  tuple(int(np.shape(params[d.name]["kernel"])[1]) for d in dsts)))
        return DeltaSpace(graph, tuple(slots), int(k_max))

    @property
    def max_in(self) -> int:
        return max(s.fan_in for s in self.sites)

    @property
    def slot_dims(self) -> int:
        return self.max_in + 1 + max(sum(s.fan_out) for s in self.sites)

    @property
    def num_dims(self) -> int:
        return self.k_max * self.slot_dims

    def slots(self, selection) -> Slots:
        return _slots(self.sites, self.k_max, selection)

    def identity(self) -> np.ndarray:
        return np.zeros(self.num_dims, np.float32)

    def _parts(self, s: SiteSlot) -> dict:
        """Slices of one slot's vector that site ``s`` uses."""
        parts, off = {"in": slice(0, s.fan_in), "bias": slice(self.max_in, self.max_in + 1)}, self.max_in + 1
        for d, fo in zip(s.dsts, s.fan_out):
            parts[d] = slice(off, off + fo)
            off += fo
        return parts

    def bounds(self, params, slots: Slots, bounds=1.0) -> tuple[np.ndarray, np.ndarray]:
        bound = float(bounds if np.ndim(bounds) == 0 else np.asarray(bounds).ravel()[-1])
        if not bound > 0:
            raise ValueError(f"the delta bound (× layer std) must be positive, got {bounds}")
        hi = np.zeros((self.k_max, self.slot_dims), np.float32)
        for i, si, _ in _active(slots):
            s = self.sites[si]
            parts = self._parts(s)
            s_in = bound * float(np.std(np.asarray(params[s.src]["kernel"])))
            hi[i, parts["in"]] = s_in
            if "bias" in params[s.src]:
                hi[i, parts["bias"]] = s_in
            for d in s.dsts:
                hi[i, parts[d]] = bound * float(np.std(np.asarray(params[d]["kernel"])))
        return -hi.ravel(), hi.ravel()

    def realize(self, params, slots: Slots, flat: jax.Array):
        d = flat.reshape(self.k_max, self.slot_dims)
        new = dict(params)
        for i, s in enumerate(self.sites):
            idx = jnp.where(slots.site == i, slots.unit, s.num_units)  # other slots: dropped
            parts = self._parts(s)
            p = dict(new[s.src])
            p["kernel"] = p["kernel"].at[:, idx].add(d[:, parts["in"]].T, mode="drop")
            if "bias" in p:
                p["bias"] = p["bias"].at[idx].add(d[:, parts["bias"]][:, 0], mode="drop")
            new[s.src] = p
            for dst in s.dsts:
                q = dict(new[dst])
                q["kernel"] = q["kernel"].at[idx, :].add(d[:, parts[dst]], mode="drop")
                new[dst] = q
        return new, {}

    def unflatten(self, slots: Slots, flat) -> dict:
        d = np.asarray(flat, np.float32).reshape(self.k_max, self.slot_dims)
        out: dict = {}
        for i, si, _ in _active(slots):
            s = self.sites[si]
            parts = self._parts(s)
            e = out.setdefault(s.name, {"in": [], "bias": [], "out": [[] for _ in s.dsts]})
            e["in"].append(d[i, parts["in"]])
            e["bias"].append(d[i, parts["bias"]][0])
            for j, dst in enumerate(s.dsts):
                e["out"][j].append(d[i, parts[dst]])
        return {k: {"in": np.asarray(v["in"]), "bias": np.asarray(v["bias"]), "out": [np.asarray(o) for o in v["out"]]}
                for k, v in out.items()}

    def fold(self, params, slots: Slots, flat):
        return jax.device_get(self.realize(params, Slots(*map(jnp.asarray, slots)), jnp.asarray(flat))[0])
