"""Global-best PSO as CARE runs it (pyswarms ``GlobalBestPSO``), with evosax's ask/tell interface.

evosax's PSO draws one ``r1, r2`` per particle and starts with zero velocity, so a swarm that starts
entirely at the unrepaired model (as CARE's does: ``init_pos`` = 0 for every particle) would never
move. pyswarms draws ``r1, r2`` per particle *and* dimension, starts velocities uniform in
``[0, 1)`` (in units of the search coordinates: CARE's ``w ∈ [−1, 1]``, here a box of side 1, so
``[0, 0.5)``) and wraps positions that leave the box periodically. This is that algorithm, small
enough to check by eye against pyswarms' ``compute_velocity`` / ``compute_position``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Params:
    inertia_coeff: float = 0.8  # CARE: w
    cognitive_coeff: float = 0.41  # c1
    social_coeff: float = 0.41  # c2
    velocity_init: float = 0.5  # initial velocities uniform in [0, velocity_init): pyswarms' [0, 1) on a side of 2


class State(NamedTuple):
    position: jax.Array  # [N, D]
    velocity: jax.Array  # [N, D]
    best_position: jax.Array  # [N, D] personal bests
    best_fitness: jax.Array  # [N]


class PySwarmsPSO:
    """``init(key, population, fitness, params)``, ``ask(key, state, params)``, ``tell(key, x, f, state, params)``."""

    def __init__(self, population_size: int, num_dims: int):
        self.population_size, self.num_dims = population_size, num_dims

    @property
    def default_params(self) -> Params:
        return Params()

    def init(self, key, population, fitness, params: Params) -> State:
        v = params.velocity_init * jax.random.uniform(key, population.shape)
        return State(population, v, population, fitness)

    def ask(self, key, state: State, params: Params):
        k1, k2 = jax.random.split(key)
        g = state.best_position[jnp.argmin(state.best_fitness)]
        r1 = jax.random.uniform(k1, state.position.shape)
        r2 = jax.random.uniform(k2, state.position.shape)
        v = (params.inertia_coeff * state.velocity + params.cognitive_coeff * r1 * (state.best_position - state.position)
             + params.social_coeff * r2 * (g - state.position))
        x = jnp.mod(state.position + v, 1.0)  # periodic boundary of the unit box (pyswarms' default)
        return x, state._replace(velocity=v)

    def tell(self, key, population, fitness, state: State, params: Params):
        better = fitness < state.best_fitness
        return State(population, state.velocity, jnp.where(better[:, None], population, state.best_position),
                     jnp.where(better, fitness, state.best_fitness)), None
