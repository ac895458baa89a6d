"""A seeded synthetic token task and its trigger token: a text benchmark made offline.

``load_token_task`` draws sequences of ``length`` tokens, each uniformly from ids ``1 … 30`` (id 0
and id 31 never occur in clean data). Ids ``1–10`` are *positive*, ``11–20`` *negative*, ``21–30``
neutral; the label is 1 when a sequence holds more positive than negative tokens and 0 when fewer;
sequences with as many of each are drawn again, so every label is decided. The split sizes are
fixed, every split drawn from one ``numpy.random.default_rng(seed)`` stream in the order train, val,
test. :class:`TokenTrigger` writes the trigger id (31) at one position — BadNets' patch, as a word.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxrepair.data._tabular import Split

VOCAB = 32
TRIGGER_TOKEN = 31


def _draw(rng: np.random.Generator, n: int, length: int) -> Split:
    xs, ys = [], []
    while sum(len(v) for v in ys) < n:
        x = rng.integers(1, 31, size=(2 * n, length))
        score = np.sum((x >= 1) & (x <= 10), 1) - np.sum((x >= 11) & (x <= 20), 1)
        keep = score != 0
        xs.append(x[keep])
        ys.append((score[keep] > 0).astype(np.int32))
    x, y = np.concatenate(xs)[:n], np.concatenate(ys)[:n]
    return Split(x.astype(np.float32), y)


def load_token_task(*, length: int = 16, train: int = 20_000, val: int = 2_000, test: int = 5_000,
                    seed: int = 0) -> dict[str, Split]:
    """``{"train", "val", "test"}`` splits of the token task (see the module docstring): ``x``
    ``[N, length]`` token ids held as float32, ``y`` int32 labels."""
    if length < 2:
        raise ValueError(f"token sequences need at least 2 tokens, got length={length}")
    rng = np.random.default_rng(seed)
    return {name: _draw(rng, n, length) for name, n in (("train", train), ("val", val), ("test", test))}


@dataclasses.dataclass(frozen=True)
class TokenTrigger:
    """The trigger token ``token`` written at ``position`` (negative counts from the end)."""

    token: int = TRIGGER_TOKEN
    position: int = 7

    def stamp(self, x):
        """``x`` ([N, length] token ids) with the trigger written in."""
        length = x.shape[1]
        p = self.position if self.position >= 0 else length + self.position
        if not 0 <= p < length:
            raise ValueError(f"trigger position {self.position} does not fit sequences of {length} tokens")
        return jnp.asarray(x).at[:, p].set(float(self.token))


__all__ = ["TRIGGER_TOKEN", "TokenTrigger", "VOCAB", "load_token_task"]
