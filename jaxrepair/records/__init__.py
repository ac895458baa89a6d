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


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


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


def new_run_dir(base: str | Path, stem: str) -> Path:
    """A fresh directory ``base/stem-YYYYmmdd-HHMMSS[-n]`` (never an existing one)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(base)
    for n in range(1000):
        d = base / (f"{stem}-{stamp}" + (f"-{n}" if n else ""))
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run directory under {base}")


def _default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray) or hasattr(o, "__array__"):
        return np.asarray(o).tolist()
    return str(o)


def write_json(path, record: dict) -> Path:
    text = json.dumps(record, indent=2, default=_default)
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


def save_figure(fig, path) -> Path:
    import matplotlib.pyplot as plt

    import io

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
    ranked = localization.ranking(score)[:top]
    sites = list(localization.sites)
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(ranked) + 2), 4))
    ax.bar(range(len(ranked)), [n.score for n in ranked], color=[colors(sites.index(n.site) % 10) for n in ranked])
    ax.set_xticks(range(len(ranked)), [f"{n.site}[{n.unit}]" for n in ranked], rotation=70, fontsize=7)
    from matplotlib.patches import Patch

    shown = [s for s in sites if any(n.site == s for n in ranked)]
    ax.legend(handles=[Patch(color=colors(sites.index(s) % 10), label=s) for s in shown], title="site", fontsize=7)
    ax.set_ylabel(score.replace("_", " "))
    ax.set_title(f"ACE neuron scores ({localization.effect[:60]})", fontsize=9)
    return save_figure(fig, path)
