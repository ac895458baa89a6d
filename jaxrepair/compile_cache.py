"""JAX's persistent compilation cache in jaxrepair's user cache directory: switched on by the
``jaxrepair`` command at its start and by :func:`enable` in a script (importing jaxrepair changes
no JAX setting).

Compiling the localisation and search programs costs seconds; the persistent cache turns that into
a file read in every later process (``jaxrepair bench cold`` measures both). The cache lives in
``$JAXREPAIR_COMPILE_CACHE_DIR``, else ``$JAXREPAIR_CACHE/jax-compile``, else
``~/.cache/jaxrepair/jax-compile``. ``JAXREPAIR_NO_COMPILE_CACHE=1`` turns it off; a cache the user
configured for JAX itself (``JAX_COMPILATION_CACHE_DIR``) is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def default_dir() -> Path:
    if os.environ.get("JAXREPAIR_COMPILE_CACHE_DIR"):
        return Path(os.environ["JAXREPAIR_COMPILE_CACHE_DIR"])
    root = os.environ.get("JAXREPAIR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jaxrepair")
    return Path(root) / "jax-compile"


def enable(path: str | os.PathLike | None = None) -> Path | None:
    """Points JAX's persistent compilation cache at ``path`` (default :func:`default_dir`) and caches
    every program, however quick to compile. Returns the directory, or None when turned off."""
    if path is None and (os.environ.get("JAXREPAIR_NO_COMPILE_CACHE") or os.environ.get("JAX_COMPILATION_CACHE_DIR")):
        return None
    d = Path(path) if path is not None else default_dir()
    jax.config.update("jax_compilation_cache_dir", str(d))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return d
