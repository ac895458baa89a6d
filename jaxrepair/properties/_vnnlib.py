"""VNN-LIB properties (the VNN-COMP format): input boxes and the *unsafe* output region.

A VNN-LIB file declares inputs ``X_i`` and outputs ``Y_j`` and asserts a formula; the property is
violated exactly when some input satisfies every assertion, i.e. lies in an input box and gives an
output in the stated region. :func:`from_vnnlib` reads the formulas VNN-COMP uses: bounds on
single inputs and linear comparisons of outputs (``Y_0 <= Y_1``, ``Y_0 >= 3.99``, sums and scalings
of outputs), combined with ``and`` / ``or`` into a disjunction of input boxes and a disjunction of
output clauses (each a conjunction of rows ``C·y <= d``). Strict comparisons are read as non-strict
(a boundary point counts as a violation: sound for verification). Anything else — a constraint that
mixes inputs and outputs, a non-linear term, an unbounded input — is refused with the file and
the form named.

The result is a :class:`Vnnlib` property: ``prop(apply_fn, params, {"x": x})`` is the per-example
violation, ``prop.margin(y)`` a continuous margin (≥ 0 exactly where the output is unsafe),
``prop.sample(key, n)`` draws uniformly from the boxes. Inputs are taken flat (``[B, n_in]``) and
reshaped to the model's input shape by the caller when it differs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def clause_margin(y: jax.Array, clauses) -> jax.Array:
    """``max_k min_j (d_kj − C_kj·y)`` per example for clauses ``[(C, d)]`` (a disjunction of
    conjunctions ``C·y <= d``): ≥ 0 iff the output ``y`` (``[B, ...]``, read flat) satisfies one."""
    y = y.reshape(y.shape[0], -1)
    per_clause = [jnp.min(jnp.asarray(d, y.dtype) - y @ jnp.asarray(C, y.dtype).T, axis=-1) for C, d in clauses]
    return jnp.max(jnp.stack(per_clause, axis=-1), axis=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class Vnnlib:
    """A VNN-LIB property: ``boxes [B, n_in, 2]`` (a disjunction) and output clauses
    ``(C [m, n_out], d [m])`` (a disjunction of conjunctions ``C·y <= d``) that describe violations."""

    boxes: np.ndarray
    clauses: tuple
    name: str = "vnnlib"

    @property
    def num_inputs(self) -> int:
        return int(self.boxes.shape[1])

    @property
    def num_outputs(self) -> int:
        return int(self.clauses[0][0].shape[1])

    def margin(self, y: jax.Array) -> jax.Array:
        """``max_k min_j (d_kj − C_kj·y)`` per example: ≥ 0 iff the output satisfies some clause."""
        return clause_margin(y, self.clauses)

    def in_boxes(self, x: jax.Array, tol: float = 1e-6) -> jax.Array:
        x = x.reshape(x.shape[0], 1, -1)
        b = jnp.asarray(self.boxes, x.dtype)[None]
        return jnp.any(jnp.all((x >= b[..., 0] - tol) & (x <= b[..., 1] + tol), axis=-1), axis=-1)

    def __call__(self, apply_fn, params, batch):
        x = batch["x"]
        return (self.in_boxes(x) & (self.margin(apply_fn(params, x)) >= 0)).astype(jnp.float32)

    def rate(self, apply_fn, params, batch):
        return jnp.mean(self(apply_fn, params, batch))

    def surrogate(self, apply_fn, params, batch):
        """Differentiable stand-in: the hinge of the margin, scaled by ``batch['scale']`` (default 1)."""
        return jax.nn.relu(self.margin(apply_fn(params, batch["x"])) / batch.get("scale", 1.0) + 0.01)

    def sample(self, key, n: int) -> jax.Array:
        """Uniform samples of the union of boxes (each box in proportion to its volume), flat ``[n, n_in]``."""
        width = self.boxes[:, :, 1] - self.boxes[:, :, 0]
        vol = np.prod(np.where(width > 0, width, 1.0), axis=1)
        kb, ku = jax.random.split(key)
        which = jax.random.choice(kb, len(self.boxes), (n,), p=jnp.asarray(vol / vol.sum()))
        lo, hi = jnp.asarray(self.boxes[:, :, 0])[which], jnp.asarray(self.boxes[:, :, 1])[which]
        return (lo + jax.random.uniform(ku, lo.shape) * (hi - lo)).astype(jnp.float32)


# ----------------------------------------------------------------------------------- parsing

_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def _check_numbers(text: str, where: str) -> None:
    """Every numeric constant finite (``nan``, ``inf`` and ``1e999`` parse as floats but bound nothing)."""
    for n, line in enumerate(text.splitlines(), 1):
        for tok in _TOKEN.findall(line):
            try:
                v = float(tok)
            except ValueError:
                continue
            if not np.isfinite(v):
                raise ValueError(f"{where}, line {n}: the constant {tok!r} is not a finite number")


def _sexprs(text: str, where: str) -> list:
    text = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
    _check_numbers(text, where)
    stack, out = [[]], None
    for tok in _TOKEN.findall(text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise ValueError(f"{where}: unbalanced ')'")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise ValueError(f"{where}: {len(stack) - 1} unclosed '('")
    out = stack[0]
    return out


class _Lin:
    """A linear form ``c + Σ a_i·X_i + Σ b_j·Y_j``."""

    def __init__(self, const=0.0, xs=None, ys=None):
        self.const = float(const)
        self.xs = {k: v for k, v in (xs or {}).items() if v != 0.0}  # a zero coefficient bounds nothing
        self.ys = {k: v for k, v in (ys or {}).items() if v != 0.0}

    def __add__(self, o):
        xs, ys = dict(self.xs), dict(self.ys)
        for k, v in o.xs.items():
            xs[k] = xs.get(k, 0.0) + v
        for k, v in o.ys.items():
            ys[k] = ys.get(k, 0.0) + v
        return _Lin(self.const + o.const, xs, ys)

    def scale(self, c: float):
        return _Lin(self.const * c, {k: v * c for k, v in self.xs.items()}, {k: v * c for k, v in self.ys.items()})


def _linear(e, where: str, names: dict) -> _Lin:
    if isinstance(e, str):
        if e in names:
            kind, i = names[e]
            return _Lin(0.0, {i: 1.0} if kind == "X" else {}, {i: 1.0} if kind == "Y" else {})
        try:
            return _Lin(float(e))
        except ValueError:
            raise ValueError(f"{where}: unknown name {e!r} (declare it with declare-const)") from None
    op, *args = e
    if op == "+":
        out = _Lin()
        for a in args:
            out = out + _linear(a, where, names)
        return out
    if op == "-":
        if len(args) == 1:
            return _linear(args[0], where, names).scale(-1.0)
        out = _linear(args[0], where, names)
        for a in args[1:]:
            out = out + _linear(a, where, names).scale(-1.0)
        return out
    if op == "*":
        parts = [_linear(a, where, names) for a in args]
        const = [p for p in parts if not p.xs and not p.ys]
        var = [p for p in parts if p.xs or p.ys]
        if len(var) > 1:
            raise ValueError(f"{where}: a product of variables is not linear: {_show(e)}")
        c = math.prod(p.const for p in const)
        return var[0].scale(c) if var else _Lin(c)
    raise ValueError(f"{where}: unsupported term {_show(e)}")


def _show(e) -> str:
    return e if isinstance(e, str) else "(" + " ".join(_show(x) for x in e) + ")"


def _dnf(e, where: str, names: dict) -> list[list]:
    """Disjunctive normal form: a list of conjunctions of atoms ``(lin, '<=')`` meaning ``lin <= 0``."""
    op = e[0] if isinstance(e, list) and e else None
    if op == "and":
        out = [[]]
        for a in e[1:]:
            out = [x + y for x, y in itertools.product(out, _dnf(a, where, names))]
        return out
    if op == "or":
        return [c for a in e[1:] for c in _dnf(a, where, names)]
    if op in ("<=", "<", ">=", ">") and len(e) == 3:
        lhs, rhs = _linear(e[1], where, names), _linear(e[2], where, names)
        diff = lhs + rhs.scale(-1.0) if op in ("<=", "<") else rhs + lhs.scale(-1.0)
        if not all(np.isfinite([diff.const, *diff.xs.values(), *diff.ys.values()])):
            raise ValueError(f"{where}: {_show(e)[:80]} overflows to a non-finite number")
        return [[diff]]
    if op == "=" and len(e) == 3:
        lhs, rhs = _linear(e[1], where, names), _linear(e[2], where, names)
        d = lhs + rhs.scale(-1.0)
        return [[d, d.scale(-1.0)]]
    raise ValueError(f"{where}: unsupported formula {_show(e)[:80]}")


def from_vnnlib(path: str | os.PathLike, *, name: str | None = None) -> Vnnlib:
    """Reads a VNN-LIB file into a :class:`Vnnlib` property (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such VNN-LIB file")
    where = str(path)
    names, asserts = {}, []
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not a text file (VNN-LIB is UTF-8 text)") from None
    for e in _sexprs(text, where):
        if not isinstance(e, list) or not e:
            raise ValueError(f"{where}: expected (declare-const ...) or (assert ...), got {_show(e)[:60]}")
        if e[0] == "declare-const":
            m = re.fullmatch(r"([XY])_(\d+)", e[1]) if len(e) == 3 else None
            if m is None or e[2] != "Real":
                raise ValueError(f"{where}: declare-const must declare X_i or Y_j as Real, got {_show(e)}")
            if e[1] in names:
                raise ValueError(f"{where}: {e[1]} is declared twice")
            names[e[1]] = (m.group(1), int(m.group(2)))
        elif e[0] == "assert" and len(e) == 2:
            asserts.append(e[1])
        else:
            raise ValueError(f"{where}: expected (declare-const ...) or (assert ...), got {_show(e)[:60]}")
    n_in = 1 + max((i for k, i in names.values() if k == "X"), default=-1)
    n_out = 1 + max((i for k, i in names.values() if k == "Y"), default=-1)
    if n_in == 0 or n_out == 0:
        raise ValueError(f"{where}: the file declares {n_in} inputs and {n_out} outputs; it needs both")
    dnf = [[]]
    for a in asserts:
        dnf = [x + y for x, y in itertools.product(dnf, _dnf(a, where, names))]
    boxes, clauses, pairs = [], [], set()
    for term in dnf:
        lo, hi = np.full(n_in, -np.inf), np.full(n_in, np.inf)
        rows, rhs = [], []
        for atom in term:
            if atom.xs and atom.ys:
                raise ValueError(f"{where}: a constraint mixes inputs and outputs; only input bounds and output "
                                 f"constraints are supported")
            if atom.xs:
                if len(atom.xs) != 1:
                    raise ValueError(f"{where}: input constraints must bound one input each (a box)")
                (i, a), = atom.xs.items()
                bound = -atom.const / a  # a·x + c <= 0
                if a > 0:
                    hi[i] = min(hi[i], bound)
                else:
                    lo[i] = max(lo[i], bound)
            elif atom.ys:
                row = np.zeros(n_out)
                for j, b in atom.ys.items():
                    row[j] = b
                rows.append(row)
                rhs.append(-atom.const)
            elif atom.const > 0:
                rows, rhs = None, None  # a false constant atom: this term is empty
                break
        if rows is None or np.any(lo > hi):
            continue
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(f"{where}: inputs {np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi))).tolist()} are "
                             f"not bounded on both sides")
        box = tuple(map(tuple, np.stack([lo, hi], 1)))
        clause = (tuple(map(tuple, rows)), tuple(rhs)) if rows else ((tuple([0.0] * n_out),), (0.0,))
        if box not in boxes:
            boxes.append(box)
        if clause not in clauses:
            clauses.append(clause)
        pairs.add((boxes.index(box), clauses.index(clause)))
    if not boxes:
        raise ValueError(f"{where}: the asserted region is empty")
    if len(pairs) != len(boxes) * len(clauses):
        raise ValueError(f"{where}: the formula pairs particular input boxes with particular output clauses; "
                         f"only (boxes) x (output clauses) is supported")
    return Vnnlib(np.asarray(boxes, np.float64), tuple((np.asarray(C, np.float64), np.asarray(d, np.float64))
                                                        for C, d in clauses), name or path.stem)
