"""ACAS Xu safety properties φ1–φ10 (Katz et al., "Reluplex", CAV 2017, appendix).

Each property is an input region (a box, or a union of boxes for φ6) over
``(ρ, θ, ψ, v_own, v_int)`` and an output predicate over the scores (advisory = argmin;
0 COC, 1 WL, 2 WR, 3 SL, 4 SR). The violation rate is measured on seeded uniform samples of the
region; the violating samples are the counterexamples.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

PI = 3.141592
_FULL = (-PI, PI)


def _adv(y):
    return jnp.argmin(y, axis=-1)


# Output predicates: True where the property is VIOLATED. y are the de-normalised scores.
_VIOLATED = {
    1: lambda y: y[:, 0] > 1500.0,  # COC score must be at most 1500
    2: lambda y: jnp.argmax(y, axis=-1) == 0,  # COC must not be the maximal score
    3: lambda y: _adv(y) == 0,  # COC must not be minimal
    4: lambda y: _adv(y) == 0,
    5: lambda y: _adv(y) != 4,  # SR must be minimal
    6: lambda y: _adv(y) != 0,  # COC must be minimal
    7: lambda y: (_adv(y) == 3) | (_adv(y) == 4),  # SL and SR never minimal
    8: lambda y: (_adv(y) != 1) & (_adv(y) != 0),  # WL or COC minimal
    9: lambda y: _adv(y) != 3,  # SL minimal
    10: lambda y: _adv(y) != 0,  # COC minimal
}

# Allowed minimal advisories of the argmin-type properties; the margin below is > 0 when violated.
_ALLOWED = {3: (1, 2, 3, 4), 4: (1, 2, 3, 4), 5: (4,), 6: (0,), 7: (0, 1, 2), 8: (0, 1), 9: (3,), 10: (0,)}


def margin(number: int, y: jax.Array) -> jax.Array:
    """A continuous violation margin of φ_n on scores ``y`` (> 0 violated, ≤ 0 satisfied), in score units."""
    if number == 1:
        return y[:, 0] - 1500.0
    if number == 2:
        return y[:, 0] - jnp.max(y[:, 1:], axis=-1)
    allowed = jnp.asarray([i in _ALLOWED[number] for i in range(5)])
    inf = jnp.asarray(jnp.inf, y.dtype)
    return jnp.min(jnp.where(allowed, y, inf), axis=-1) - jnp.min(jnp.where(allowed, inf, y), axis=-1)


def clauses(number: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The unsafe output region of φ_n as clauses ``C·y <= d`` (a disjunction of conjunctions), in
    score units, as VNN-LIB states it (a tie counts as a violation)."""
    if number == 1:
        return [(np.array([[-1.0, 0, 0, 0, 0]]), np.array([-1500.0]))]
    out = []
    if number == 2:
        rows = np.zeros((4, 5))
        rows[:, 0] = -1.0
        rows[np.arange(4), np.arange(1, 5)] = 1.0  # y_j − y_0 <= 0: COC is maximal
        return [(rows, np.zeros(4))]
    for k in range(5):
        if k in _ALLOWED[number]:
            continue
        rows = np.zeros((4, 5))
        others = [j for j in range(5) if j != k]
        rows[:, k] = 1.0
        rows[np.arange(4), others] = -1.0  # y_k − y_j <= 0: advisory k is minimal
        out.append((rows, np.zeros(4)))
    return out


_BOXES = {
    1: [[(55947.691, 60760.0), _FULL, _FULL, (1145.0, 1200.0), (0.0, 60.0)]],
    2: [[(55947.691, 60760.0), _FULL, _FULL, (1145.0, 1200.0), (0.0, 60.0)]],
    3: [[(1500.0, 1800.0), (-0.06, 0.06), (3.10, PI), (980.0, 1200.0), (960.0, 1200.0)]],
    4: [[(1500.0, 1800.0), (-0.06, 0.06), (0.0, 0.0), (1000.0, 1200.0), (700.0, 800.0)]],
    5: [[(250.0, 400.0), (0.2, 0.4), (-PI, -PI + 0.005), (100.0, 400.0), (0.0, 400.0)]],
    6: [[(12000.0, 62000.0), (0.7, PI), (-PI, -PI + 0.005), (100.0, 1200.0), (0.0, 1200.0)],
        [(12000.0, 62000.0), (-PI, -0.7), (-PI, -PI + 0.005), (100.0, 1200.0), (0.0, 1200.0)]],
    7: [[(0.0, 60760.0), _FULL, _FULL, (100.0, 1200.0), (0.0, 1200.0)]],
    8: [[(0.0, 60760.0), (-PI, -0.75 * PI), (-0.1, 0.1), (600.0, 1200.0), (600.0, 1200.0)]],
    9: [[(2000.0, 7000.0), (-0.4, -0.14), (-PI, -PI + 0.01), (100.0, 150.0), (0.0, 150.0)]],
    10: [[(36000.0, 60760.0), (0.7, PI), (-PI, -PI + 0.01), (900.0, 1200.0), (600.0, 1200.0)]],
}

DESCRIPTIONS = {
    1: "COC score <= 1500 (distant intruder, slow)", 2: "COC not the maximal score", 3: "COC not minimal",
    4: "COC not minimal", 5: "strong right minimal", 6: "COC minimal", 7: "strong left/right never minimal",
    8: "weak left or COC minimal", 9: "strong left minimal", 10: "COC minimal",
}


@dataclasses.dataclass(frozen=True)
class Safety:
    """φ_n as a property: per-example violation of the output predicate on inputs of its region."""

    number: int
    name: str = "acasxu_safety"

    def __post_init__(self):
        if self.number not in _VIOLATED:
            raise ValueError(f"ACAS Xu properties are φ1..φ10, not φ{self.number}")

    @property
    def boxes(self) -> np.ndarray:
        return np.asarray(_BOXES[self.number], np.float64)  # [boxes, 5, 2]

    @property
    def clauses(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The unsafe output region as clauses ``C·y <= d`` (see :func:`clauses`)."""
        return clauses(self.number)

    def __call__(self, apply_fn, params, batch):
        return _VIOLATED[self.number](apply_fn(params, batch["x"])).astype(jnp.float32)

    def rate(self, apply_fn, params, batch):
        return jnp.mean(self(apply_fn, params, batch))

    def margin(self, y: jax.Array) -> jax.Array:
        return margin(self.number, y)

    def surrogate(self, apply_fn, params, batch):
        """Differentiable stand-in: the hinge of the violation margin, in units of ``batch['scale']``
        (default 1) so that scores of any magnitude give a usable gradient; it is zero once the
        margin is below ``-batch['margin']`` (default 0.01) of those units; ``batch['weight']``
        (per example, default 1) weighs rare violating inputs against many safe ones."""
        m = self.margin(apply_fn(params, batch["x"])) / batch.get("scale", 1.0)
        return jax.nn.relu(m + batch.get("margin", 0.01)) * batch.get("weight", 1.0)

    def sample(self, key, n: int = 10_000) -> jax.Array:
        """Uniform samples of the region (a union of boxes is sampled in proportion to volume)."""
        boxes = self.boxes
        widths = boxes[:, :, 1] - boxes[:, :, 0]
        vol = np.prod(np.where(widths > 0, widths, 1.0), axis=1)
        kb, ku = jax.random.split(key)
        which = jax.random.choice(kb, len(boxes), (n,), p=jnp.asarray(vol / vol.sum()))
        lo, hi = jnp.asarray(boxes[:, :, 0])[which], jnp.asarray(boxes[:, :, 1])[which]
        return (lo + jax.random.uniform(ku, (n, 5), jnp.float64 if jax.config.x64_enabled else jnp.float32) * (hi - lo)).astype(jnp.float32)

    def contains(self, x) -> np.ndarray:
        x = np.asarray(x)[:, None, :]
        b = self.boxes[None]
        return np.any(np.all((x >= b[..., 0] - 1e-6) & (x <= b[..., 1] + 1e-6), axis=-1), axis=-1)


def safety_report(prop: Safety, apply_fn, params, *, key, num_samples: int = 10_000, max_counterexamples: int = 100) -> dict:
    """Violation rate on ``num_samples`` seeded samples of the region, and counterexamples found."""
    from jaxrepair.properties._core import violations, wilson_interval

    x = prop.sample(key, num_samples)
    v = violations(prop, apply_fn, params, x) > 0
    k = int(v.sum())
    return {
        "property": f"phi{prop.number}",
        "description": DESCRIPTIONS[prop.number],
        "violation_rate": k / num_samples,
        "ci95": list(wilson_interval(k, num_samples)),
        "num_samples": num_samples,
        "num_counterexamples": k,
        "counterexamples": np.asarray(x)[v][:max_counterexamples].tolist(),
    }
