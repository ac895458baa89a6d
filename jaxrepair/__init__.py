"""jaxrepair — causality-driven neural-network repair in JAX.

Importing it configures nothing in JAX; ``jr.compile_cache.enable()`` switches JAX's persistent
compilation cache on (the ``jaxrepair`` command does so at its start).

The public API in one screen::

    import jaxrepair as jr
    model = jr.models.mlp([13, 64, 32, 16, 8, 4, 2], key=jax.random.key(0))
    apply, params = jr.functional(model)          # pure apply(params, x, intervention)
    jr.sites(model)                                # named intervention sites and shapes
    loc = jr.causal.ace(model, batch, jr.causal.TargetOutput(1))
    loc.top(3)                                     # ranked neurons
"""

from jaxrepair import causal, compile_cache, convert, data, distributed, feature, interventions, models, properties, records, repair, suite, verify, zoo
from jaxrepair.interventions import Intervention
from jaxrepair.models import Network, functional, load, save, sites

__version__ = "0.1.0"

__all__ = ["Intervention", "Network", "causal", "compile_cache", "convert", "data", "distributed", "feature", "functional", "interventions", "load", "models", "properties", "records", "repair", "save", "sites", "suite", "verify", "zoo"]
