"""Verification: sound output bounds (intervals, CROWN) over input boxes, a falsifier, and branch
and bound by input splitting that proves a property safe (with a certificate) or finds a confirmed
counterexample.

>>> v = jr.verify(model, jr.properties.from_vnnlib("prop_2.vnnlib"), timeout=60)   # doctest: +SKIP
>>> v.verdict, v.seconds, v.counterexample                                          # doctest: +SKIP

Depends on :mod:`jaxrepair.models` and :mod:`jaxrepair.properties`.
"""

from jaxrepair.verify._bab import ALPHA_STEPS, BATCH, SPLIT, Verdict, counterexamples, falsify, readable, spec_of, stack_clauses, verify
from jaxrepair.verify._bounds import Chain, affine_chain, alpha_crown, crown, crown_pre, default_alphas, forward, interval
from jaxrepair.verify._graph import check_graph, graph_alpha_crown, graph_crown, graph_crown_pre, graph_interval

__all__ = ["ALPHA_STEPS", "BATCH", "Chain", "Verdict", "affine_chain", "alpha_crown", "default_alphas", "check_graph", "counterexamples", "crown", "crown_pre", "falsify",
           "forward", "graph_alpha_crown", "graph_crown", "graph_crown_pre", "graph_interval", "interval", "readable", "SPLIT", "spec_of", "stack_clauses", "verify"]


import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    """Lets ``jr.verify(model, prop)`` call :func:`verify` while ``jr.verify.*`` stays a module."""

    def __call__(self, *args, **kwargs):
        return verify(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
