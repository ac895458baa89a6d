"""Worker for the multi-process test: ``python -m tests._dist_worker OUT NUM_PROCESSES PROCESS_ID PORT``.

Runs the same ACE localisation and repair as the single-process reference in ``test_scale`` on a
mesh spanning every process; process 0 writes the results to OUT (npz)."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(out, num_processes, process_id, port):
    import jaxrepair as jr

    if num_processes > 1:
        jr.distributed.initialize(f"localhost:{port}", num_processes, process_id)
    import jax
    import numpy as np

    from tests.test_scale import reference_problem

    model, x, task = reference_problem()
    loc = jr.causal.ace(model, x, jr.causal.TargetOutput(1), sites=["layer1", "layer2"], num_values=5, batch_size=16,
                        data_parallel=2 if len(jax.devices()) % 2 == 0 and len(jax.devices()) > 1 else 1)
    r = jr.repair(model, task, k=2, strategy="pso", generations=8, population_size=10, localization=loc)
    if jr.distributed.is_main():
        np.savez(out, curve1=loc.sites["layer1"].curve, curve2=loc.sites["layer2"].curve, baseline=loc.baseline,
                 solution=np.asarray(r.solution["layer1"] if "layer1" in r.solution else list(r.solution.values())[0]),
                 devices=len(jax.devices()), processes=jax.process_count())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
