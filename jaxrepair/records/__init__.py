"""Results as files: JSON records, markdown tables and plots, written atomically, never over a
user's file. Plots need matplotlib (the ``plot`` extra) and are skipped with a note without it.
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from jaxrepair.models import write_atomic
from jaxrepair.records._progress import Progress


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def did_you_mean(name, choices) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to a mistyped ``name``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def environment() -> dict:
    import evosax
    import flax
    import optax

    return {
        "python": platform.python_version(),
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                     "evosax": getattr(evosax, "__version__", None) or _dist_version("evosax"), "numpy": np.__version__},
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "machine": platform.machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def check_output_dir(base: str | Path) -> Path:
    """``base`` as a Path, if it is (or can become) a writable directory; a clear error otherwise."""
    import os

    base = Path(base)
    if base.exists() and not base.is_dir():
        raise ValueError(f"output directory {base} is an existing file; choose a directory with --out")
    probe = base
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write under {probe} (output directory {base})")
    return base


def new_run_dir(base: str | Path, stem: str) -> Path:
    """A fresh directory name ``base/stem-YYYYmmdd-HHMMSS[-n]`` (never an existing one).

    Checked now — ``base`` must be a directory or creatable, and writable — but created only by the
    first file written into it, so a run that fails before writing leaves nothing behind. Call it
    before the work starts."""
    base = check_output_dir(base)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        d = base / (f"{stem}-{stamp}" + (f"-{n}" if n else ""))
        if not d.exists():
            return d
    raise RuntimeError(f"could not find a fresh run directory name under {base}")


def jsonable(obj):
    """``obj`` with numpy/JAX values made plain and non-finite floats made ``None``: strict JSON."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    elif isinstance(obj, np.ndarray) or (hasattr(obj, "__array__") and not isinstance(obj, (str, bytes))):
        return jsonable(np.asarray(obj).tolist())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def dumps(record, *, indent: int | None = 2) -> str:
    """Strict JSON (no bare NaN/Infinity: they become null)."""
    return json.dumps(jsonable(record), indent=indent, allow_nan=False)


def write_json(path, record: dict) -> Path:
    text = dumps(record)
    return write_atomic(path, lambda f: f.write(text.encode()))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_text(path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive backend, or None (with a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'jaxrepair[plot]'); skipping the plot", file=sys.stderr)
        return None
    return plt


def save_figure(fig, path, *, tight: bool = True) -> Path:
    """Writes ``fig`` atomically (``tight=False`` keeps a layout the caller arranged)."""
    import matplotlib.pyplot as plt

    import io

    if tight:
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return write_atomic(Path(path), lambda f: f.write(buf.getvalue()), overwrite=True)


def plot_scores(localization, path, *, score: str = "interventional_change", top: int = 30) -> Path | None:
    """Bar chart of the top units' scores, coloured by site."""
    plt = pyplot()
    if plt is None:
        return None
    every = localization.ranking(score)
    ranked = every[:top]
    sites = list(localization.sites)
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(ranked) + 2), 4))
    ax.bar(range(len(ranked)), [n.score for n in ranked], color=[colors(sites.index(n.site) % 10) for n in ranked])
    ax.set_xticks(range(len(ranked)), [f"{n.site}[{n.unit}]" for n in ranked], rotation=70, fontsize=7)
    from matplotlib.patches import Patch

    shown = [s for s in sites if any(n.site == s for n in ranked)]
    ax.legend(handles=[Patch(color=colors(sites.index(s) % 10), label=s) for s in shown], title="site", fontsize=7)
    ax.set_ylabel(score.replace("_", " "))
    import textwrap

    effect = getattr(localization, "effect", "")
    total = len(every)
    title = (f"Top {len(ranked)} of {total} units ({len(sites)} site{'s' if len(sites) > 1 else ''}) ranked by "
             f"{score.replace('_', ' ')}" + (f"\neffect: {effect}" if effect else ""))
    ax.set_title("\n".join(w for line in title.split("\n") for w in textwrap.wrap(line, 110)), fontsize=8)
    return save_figure(fig, path)
