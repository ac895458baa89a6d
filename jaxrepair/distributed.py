"""Devices and hosts: meshes, placement of inputs, gathering of outputs, multi-process start-up.

jaxrepair uses JAX's own runtime: ``jax.make_mesh`` + ``jax.shard_map`` for devices and
``jax.distributed.initialize`` for hosts. ACE localisation shards its (unit, value) grid over the
mesh axis ``units`` and optionally the data chunks over ``data``; repair shards the population over
``pop``. The same code runs on one CPU, on 8 forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on a GPU box or on N processes of a
cluster/TPU slice: every input is built as a global array from each process's local copy
(:func:`put`), so a process only materialises the shards its own devices hold, and outputs are
gathered to every process (:func:`gather`). Only process 0 writes results (:func:`is_main`).

Meshes are created with ``AxisType.Auto`` axes: the programs are ``shard_map`` bodies that say
exactly where every collective goes, so the sharding-in-types of ``Explicit`` meshes (the default of
new meshes) would add nothing.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

_STARTED = {"done": False}


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, *,
               timeout: int = 60) -> bool:
    """Starts JAX's distributed runtime when a multi-process run is configured.

    Arguments fall back to ``JAXREPAIR_COORDINATOR`` / ``JAXREPAIR_NUM_PROCESSES`` /
    ``JAXREPAIR_PROCESS_ID``. With neither set (or one process) nothing happens and False is returned.
    On CPU the gloo collectives are selected so that processes can talk over TCP. A coordinator that
    cannot be reached within ``timeout`` seconds is a ``RuntimeError`` naming it (not a hang).
    """
    coordinator = coordinator or os.environ.get("JAXREPAIR_COORDINATOR")
    num_processes = int(num_processes or os.environ.get("JAXREPAIR_NUM_PROCESSES", "1"))
    if process_id is None and "JAXREPAIR_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAXREPAIR_PROCESS_ID"])
    if num_processes <= 1 or _STARTED["done"]:
        return _STARTED["done"]
    if coordinator is None or process_id is None:
        raise ValueError("a multi-process run needs the coordinator address and this process's id "
                         "(--coordinator HOST:PORT --process-id I, or JAXREPAIR_COORDINATOR / JAXREPAIR_PROCESS_ID)")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is outside 0..{num_processes - 1}")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"the coordinator must be HOST:PORT with a port in 1..65535, got {coordinator!r}")
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or jax.config.jax_platforms == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=int(timeout))
    except Exception as e:  # noqa: BLE001 - JAX raises XlaRuntimeError / RuntimeError variants
        raise RuntimeError(f"could not join the multi-process run at {coordinator} within {timeout}s "
                           f"(process {process_id} of {num_processes}): {str(e).splitlines()[0][:200]}") from None
    _STARTED["done"] = True
    return True


def is_main() -> bool:
    return jax.process_index() == 0


def devices(spec=None) -> list:
    """``None`` or ``"all"``: every device (of every process); an int ``n``: the first ``n``; or a list."""
    all_devs = jax.devices()
    if spec is None or spec == "all":
        return all_devs
    if isinstance(spec, int):
        if not 1 <= spec <= len(all_devs):
            raise ValueError(f"asked for {spec} devices; {len(all_devs)} are available")
        return all_devs[:spec]
    return list(spec)


def make_mesh(axes: dict[str, int] | Sequence[tuple[str, int]], devs=None) -> Mesh:
    """A mesh over ``devs`` (default: all) with the named axis sizes; a size of -1 takes the rest."""
    devs = devices(devs)
    items = list(axes.items()) if isinstance(axes, dict) else list(axes)
    known = int(np.prod([n for _, n in items if n != -1]))
    sizes = [n if n != -1 else len(devs) // known for _, n in items]
    if int(np.prod(sizes)) != len(devs):
        raise ValueError(f"mesh axes {dict(zip([a for a, _ in items], sizes))} do not multiply to {len(devs)} devices")
    auto = (jax.sharding.AxisType.Auto,) * len(items)
    return jax.make_mesh(tuple(sizes), tuple(a for a, _ in items), axis_types=auto, devices=devs)


def put(x, mesh: Mesh, spec: PartitionSpec = PartitionSpec()):
    """A global array with ``spec`` over ``mesh`` from a host value every process holds in full.
    Only the shards of this process's devices are copied (``make_array_from_callback``)."""
    x = np.asarray(x)
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def put_tree(tree, mesh: Mesh, spec: PartitionSpec = PartitionSpec()):
    return jax.tree.map(lambda a: put(a, mesh, spec), tree)


def gather(x) -> np.ndarray:
    """A (possibly multi-process) array as one host numpy array on every process."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    if x.sharding.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def pad_to(a: np.ndarray, multiple: int, axis: int = 0):
    """Pads ``a`` along ``axis`` to a multiple of ``multiple`` by repeating its first entry."""
    n = a.shape[axis]
    pad = (-n) % multiple
    if not pad:
        return a
    first = np.take(a, [0] * pad, axis=axis)
    return np.concatenate([a, first], axis=axis)


__all__ = ["devices", "gather", "initialize", "is_main", "make_mesh", "pad_to", "put", "put_tree"]
