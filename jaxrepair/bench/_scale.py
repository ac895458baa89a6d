"""``jaxrepair bench scale``: ACE throughput per device and scaling efficiency from 1 to N devices.

The device count of a JAX process is fixed when it starts, so each count runs in a fresh
subprocess (on CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=d``; on an accelerator
host the first ``d`` real devices). Each subprocess localises the same model (units sharded over the
mesh) and reports intervened sample-evaluations per second (compile excluded: the program runs
twice and the second run is timed). Efficiency at ``d`` devices = throughput(d) / (d · throughput(1)).
Forced host devices share the machine's physical cores, so on a CPU the efficiency is bounded by
``cores / d`` — the point of the CPU run is that the sharded program is correct and scales with what
the hardware has; the GPU/TPU figures are the ones to read for speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

MODELS = {"mlp-784-4096-4096-10": [784, 4096, 4096, 10], "mlp-784-1024-1024-10": [784, 1024, 1024, 10]}


def _one(model: str, devices: int, samples: int, num_values: int, units: int) -> dict:
    import jax
    import numpy as np

    from jaxrepair import causal, models

    widths = MODELS[model]
    net = models.mlp(widths, key=jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(samples, widths[0])).astype(np.float32)
    sel = {"layer1": list(range(units))}
    kw = dict(sites=["layer1"], units=sel, num_values=num_values, devices=devices)
    t = time.perf_counter()
    causal.ace(net, x, causal.TargetOutput(0), **kw)
    first = time.perf_counter() - t
    t = time.perf_counter()
    causal.ace(net, x, causal.TargetOutput(0), **kw)
    run = time.perf_counter() - t
    evals = units * num_values * samples
    return {"model": model, "devices": devices, "platform": jax.devices()[0].platform, "units": units,
            "num_values": num_values, "samples": samples, "first_call_s": first, "run_s": run,
            "evals_per_s": evals / run, "evals_per_s_per_device": evals / run / devices}


def scaling(model: str = "mlp-784-4096-4096-10", counts=(1, 2, 4, 8), *, samples: int = 256, num_values: int = 16,
            units: int = 512, progress: bool = True) -> dict:
    rows = []
    for d in counts:
        env = dict(os.environ)
        if env.get("JAX_PLATFORMS", "cpu").startswith("cpu") and not _has_accelerator():
            env["JAX_PLATFORMS"] = "cpu"
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={d}".strip()
        code = ("import json, sys; from jaxrepair.bench._scale import _one; "
                f"print('RESULT', json.dumps(_one({model!r}, {d}, {samples}, {num_values}, {units})))")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=1800)
        line = next((ln for ln in out.stdout.decode().splitlines() if ln.startswith("RESULT ")), None)
        if out.returncode != 0 or line is None:
            raise RuntimeError(f"scaling run with {d} devices failed:\n{out.stderr.decode()[-2000:]}")
        row = json.loads(line[len("RESULT "):])
        rows.append(row)
        if progress:
            print(f"[bench scale] {d} device(s): {row['evals_per_s']:.3g} evals/s ({row['evals_per_s_per_device']:.3g} per device)",
                  file=sys.stderr, flush=True)
    base = rows[0]["evals_per_s"]
    for r in rows:
        r["speedup"] = r["evals_per_s"] / base
        r["efficiency"] = r["evals_per_s"] / (r["devices"] * base)
    return {"model": model, "rows": rows, "physical_cpu_cores": os.cpu_count()}


def _has_accelerator() -> bool:
    try:
        import jax

        return jax.default_backend() != "cpu"
    except Exception:  # noqa: BLE001
        return False
