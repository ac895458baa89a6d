"""ACAS Xu: the 45 bundled networks (Julian et al.; Katz et al., CAV 2017), read by
:func:`jaxrepair.convert.from_nnet`'s parser.

A ``.nnet`` file becomes a :class:`~jaxrepair.models.Network` whose graph reproduces the file's
semantics exactly: inputs clipped to ``[min, max]`` (``input.clip``), normalised as
``(x − mean) / range`` (``input.norm``), ReLU hidden layers ``layer{i}.pre``/``layer{i}``, a linear
``logits`` layer and the output de-normalisation ``scores = logits·range_out + mean_out``.
The advisory is the *minimum* score: 0 COC, 1 weak left, 2 weak right, 3 strong left, 4 strong right.
"""

from __future__ import annotations

import lzma
from importlib import resources

from jaxrepair.convert import network_from_nnet, parse_nnet
from jaxrepair.models import Network

ADVISORIES = ("COC", "WL", "WR", "SL", "SR")
INPUTS = ("rho", "theta", "psi", "v_own", "v_int")


def acasxu_text(i: int, j: int) -> str:
    if not (1 <= i <= 5 and 1 <= j <= 9):
        raise ValueError(f"ACAS Xu networks are N_{{i,j}} with i in 1..5, j in 1..9; got ({i}, {j})")
    f = resources.files("jaxrepair.data") / "bundled" / "acasxu" / f"ACASXU_run2a_{i}_{j}_batch_2000.nnet.xz"
    return lzma.decompress(f.read_bytes()).decode()


def load_acasxu(i: int, j: int) -> Network:
    """The bundled network N_{i,j}."""
    text = acasxu_text(i, j)
    return network_from_nnet(parse_nnet(text, f"N_{i},{j}"), f"ACASXU_run2a_{i}_{j}")
