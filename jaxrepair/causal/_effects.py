"""Effect functions: what ACE measures under each intervention.

An effect declares the inputs it needs (``inputs(batch) -> [G·B, ...]``, e.g. an example together
with its sensitive-attribute counterfactuals) and reduces the model outputs on them to one number
per example (``reduce(outputs, batch) -> [B]``). Splitting it this way lets ACE compute the layers
before a site once for all of those inputs and share them across every (neuron, value) pair.
Effects are frozen dataclasses, hashable by value, so a compiled localisation is reused whenever
the same effect is asked for again.

Any other callable ``effect(apply_fn, batch) -> [B]`` (``apply_fn`` maps inputs to outputs under
the intervention being evaluated) also works, through a path without prefix sharing.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp


@runtime_checkable
class Effect(Protocol):
    """What ACE measures: the inputs it needs and their reduction to one number per example."""

    def inputs(self, batch) -> jax.Array:
        """``[G·B, ...]`` inputs to evaluate for a batch of ``B`` examples."""

    def reduce(self, out: jax.Array, batch) -> jax.Array:
        """``[B]`` effect values from the outputs on :meth:`inputs`."""


def _select(out: jax.Array, target: int | None, output: str) -> jax.Array:
    if output == "prob":
        out = jax.nn.softmax(out, axis=-1)
    elif output != "logit":
        raise ValueError(f"output must be 'logit' or 'prob', got {output!r}")
    return out if target is None else out[:, target]


@dataclasses.dataclass(frozen=True)
class TargetOutput:
    """``y_target(x)``: the target class's logit (or probability with ``output='prob'``)."""

    target: int
    output: str = "logit"

    def inputs(self, batch):
        return batch["x"]

    def reduce(self, out, batch):
        return _select(out, self.target, self.output)


@dataclasses.dataclass(frozen=True)
class Fairness:
    """CARE's fairness effect: ``max_{s'} |y_c(x with s:=s') − y_c(x)|`` per example.

    ``columns`` are the input columns holding the sensitive attribute (one column for an integer
    code, several for a one-hot code); ``values`` lists every value of it, one row per value (a
    row has ``len(columns)`` entries). Setting ``s`` to its own value gives 0, so the max over all
    values equals the max over the other values.
    """

    columns: tuple[int, ...]
    values: tuple[tuple[float, ...], ...]
    target: int = 1
    output: str = "prob"

    @staticmethod
    def make(columns: int | Sequence[int], values, *, target: int = 1, output: str = "prob") -> "Fairness":
        cols = (int(columns),) if isinstance(columns, int) else tuple(int(c) for c in columns)
        rows = tuple(tuple(float(v) for v in jnp.atleast_1d(jnp.asarray(r))) for r in values)
        if any(len(r) != len(cols) for r in rows):
            raise ValueError(f"each sensitive value needs {len(cols)} entries (one per column), got {rows}")
        if len(rows) < 2:
            raise ValueError("a sensitive attribute needs at least two values")
        return Fairness(cols, rows, target, output)

    def counterfactuals(self, x: jax.Array) -> jax.Array:
        """``[V, B, ...]``: ``x`` with the sensitive attribute set to each value."""
        vals = jnp.asarray(self.values, x.dtype)  # [V, len(columns)]
        cols = jnp.asarray(self.columns)
        return jax.vmap(lambda v: x.at[:, cols].set(v))(vals)

    def inputs(self, batch):
        x = batch["x"]
        return jnp.concatenate([x[None], self.counterfactuals(x)]).reshape(-1, *x.shape[1:])

    def reduce(self, out, batch):
        b = batch["x"].shape[0]
        y = _select(out, self.target, self.output).reshape(len(self.values) + 1, b)
        return jnp.max(jnp.abs(y[1:] - y[0]), axis=0)


@dataclasses.dataclass(frozen=True)
class CounterfactualPair:
    """Output difference of a counterfactual pair: ``|y_c(x_cf) − y_c(x)|`` (batch keys ``x``, ``x_cf``),
    or the L2 norm of the whole output difference when ``target`` is None."""

    target: int | None = None
    output: str = "logit"

    def inputs(self, batch):
        return jnp.concatenate([batch["x"], batch["x_cf"]])

    def reduce(self, out, batch):
        b = batch["x"].shape[0]
        y = _select(out, self.target, self.output)
        d = y[b:] - y[:b]
        return jnp.abs(d) if self.target is not None else jnp.linalg.norm(d, axis=-1)


def check_against(effect, input_shape: tuple, num_outputs: int) -> None:
    """Raises ``ValueError`` when an effect names an output class or input column the model lacks
    (JAX would clamp the index and silently measure another class or column)."""
    target = effect.target if isinstance(effect, (TargetOutput, Fairness, CounterfactualPair)) else None
    if target is not None and not 0 <= target < num_outputs:
        raise ValueError(f"effect {describe(effect)}: class {target} does not exist; the model has {num_outputs} "
                         f"outputs (0..{num_outputs - 1})")
    if isinstance(effect, Fairness):
        width = input_shape[-1] if input_shape else 0
        bad = [c for c in effect.columns if not 0 <= c < width]
        if len(input_shape) != 1 or bad:
            raise ValueError(f"effect {describe(effect)}: sensitive column(s) {bad or list(effect.columns)} are not "
                             f"columns of a model input of shape {tuple(input_shape)}")


def is_structured(effect) -> bool:
    return isinstance(effect, Effect)


def describe(effect) -> str:
    """An effect in words for messages and plot titles: ``Fairness: columns (8,), values ((0.0, 1.0),)``
    becomes ``Fairness (columns 8; values 0, 1)``; a function by its name."""
    if not dataclasses.is_dataclass(effect):
        return getattr(effect, "__name__", repr(effect))

    def show(v):
        if isinstance(v, (tuple, list)):
            return ", ".join(show(x) for x in v)
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    parts = [f"{f.name} {show(getattr(effect, f.name))}" for f in dataclasses.fields(effect)
             if getattr(effect, f.name) is not None]
    return f"{type(effect).__name__} ({'; '.join(parts)})" if parts else type(effect).__name__
