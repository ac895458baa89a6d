"""``jaxrepair bench onnx``: the ONNX importer against onnx's backend node tests.

Reads the node test cases straight from the tarball the user names (``--node-tests``: the folder
holding ``onnx_node.tar.xz``, or the file itself). A case is compared when every op of its graph is
one the importer supports; it is then imported, run on the stored inputs and sorted into

* ``pass``: every output within rtol = atol = 1e-4 (float32) of the stored one;
* ``refused``: the importer said no with a ``ConversionError`` naming why (an attribute, a dtype,
  a batch-axis reduction it does not support) — a clear error, not a wrong number;
* ``mismatch``: it imported and ran, and a number is wrong;
* ``crash``: any other exception.

jaxrepair models take one float input with a leading batch axis and give one output. A case with
several inputs keeps its first float input as the model input and has the others frozen into
initialisers (their stored values), which keeps its meaning; a case with several outputs is
imported and compared on its first (``from_onnx(..., output=...)``). Cases whose stored data are
not plain tensors (sequences, optionals) are skipped and counted.
"""

from __future__ import annotations

import collections
import tarfile
import time
from pathlib import Path

import numpy as np

TOLERANCE = 1e-4


def _cases(tar: tarfile.TarFile) -> dict[str, dict]:
    out: dict[str, dict] = collections.defaultdict(lambda: {"inputs": {}, "outputs": {}})
    for m in tar.getmembers():
        parts = m.name.split("/")
        if not m.isfile() or len(parts) < 3 or parts[0] != "node":
            continue
        case = parts[1]
        if parts[2] == "model.onnx":
            out[case]["model"] = m
        elif len(parts) == 4 and parts[2] == "test_data_set_0" and parts[3].endswith(".pb"):
            kind, _, idx = parts[3][:-3].partition("_")
            out[case]["inputs" if kind == "input" else "outputs"][int(idx)] = m
    return {k: v for k, v in out.items() if "model" in v}


def _freeze(model, inputs: list[np.ndarray]):
    """The model with its first float input kept and every other input made an initialiser."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    init = {i.name for i in graph.initializer}
    real = [i for i in graph.input if i.name not in init]
    if len(real) != len(inputs):
        raise ValueError(f"{len(real)} graph inputs but {len(inputs)} stored inputs")
    keep = next((i for i, a in enumerate(inputs) if a.dtype.kind == "f"), None)
    if keep is None:
        return None, None
    for i, (vi, a) in enumerate(zip(real, inputs)):
        if i != keep:
            graph.initializer.append(numpy_helper.from_array(a, vi.name))
    kept = real[keep]
    del graph.input[:]
    graph.input.extend([kept])
    onnx.checker.check_model(model)
    return model, inputs[keep]


def run(node_tests: str, *, progress: bool = True) -> dict:
    """Runs every case whose ops are supported; returns counts per outcome and per op."""
    import onnx
    from onnx import numpy_helper

    from jaxrepair import convert

    path = Path(node_tests)
    if path.is_dir():
        path = path / "onnx_node.tar.xz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: onnx's node tests are not there (expected onnx_node.tar.xz)")
    supported = set(convert.SUPPORTED)
    t0 = time.perf_counter()
    rows, per_op = [], collections.defaultdict(collections.Counter)
    with tarfile.open(path) as tar:
        cases = _cases(tar)
        for name in sorted(cases):
            c = cases[name]
            model = onnx.load_model_from_string(tar.extractfile(c["model"]).read())
            ops = sorted({n.op_type for n in model.graph.node})
            if not set(ops) <= supported or not c["outputs"]:
                continue
            op = ops[0] if len(ops) == 1 else "+".join(ops)
            load = lambda m: numpy_helper.to_array(onnx.load_tensor_from_string(tar.extractfile(m).read()))  # noqa: E731
            try:
                inputs = [load(c["inputs"][i]) for i in sorted(c["inputs"])]
                want = load(c["outputs"][min(c["outputs"])])
            except Exception as e:  # noqa: BLE001 - sequences/optionals are not plain tensors
                rows.append({"case": name, "ops": ops, "outcome": "skipped", "detail": f"stored data unreadable: {e}"})
                continue
            outcome, detail = _run_case(model, inputs, want)
            rows.append({"case": name, "ops": ops, "outcome": outcome, "detail": detail})
            per_op[op][outcome] += 1
    counts = collections.Counter(r["outcome"] for r in rows)
    out = {"node_tests": str(path), "cases_compared": len(rows), "counts": dict(counts),
           "per_op": {k: dict(v) for k, v in sorted(per_op.items())}, "rows": rows,
           "tolerance": TOLERANCE, "seconds": time.perf_counter() - t0}
    if progress:
        import sys

        for r in rows:
            if r["outcome"] in ("mismatch", "crash"):
                print(f"[bench onnx] {r['outcome']}: {r['case']} ({r['detail']})", file=sys.stderr)
        print(f"[bench onnx] {len(rows)} cases with supported ops: " +
              ", ".join(f"{counts.get(k, 0)} {k}" for k in ("pass", "refused", "mismatch", "crash")), file=sys.stderr)
    return out


def _run_case(model, inputs, want) -> tuple[str, str]:
    from jaxrepair import convert

    try:
        frozen, x = _freeze(model, inputs)
    except Exception as e:  # noqa: BLE001 - a case the harness cannot adapt is reported, not hidden
        return "refused", f"cannot adapt the case: {e}"
    if frozen is None:
        return "refused", "no float input (jaxrepair models take a float input)"
    if x.ndim == 0:
        return "refused", "a scalar input has no batch axis"
    try:
        net = convert.from_onnx(frozen.SerializeToString(), output=frozen.graph.output[0].name)
    except (convert.ConversionError, ValueError) as e:
        return "refused", str(e).splitlines()[0][:200]
    except Exception as e:  # noqa: BLE001
        return "crash", f"import: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    try:
        got = np.asarray(net(x))
    except Exception as e:  # noqa: BLE001
        return "crash", f"run: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    if got.shape != want.shape:
        return "mismatch", f"shape {got.shape}, expected {want.shape}"
    if not np.allclose(got, want.astype(np.float64), rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True):
        err = float(np.max(np.abs(got - want)))
        return "mismatch", f"max abs error {err:.3g}"
    return "pass", ""

