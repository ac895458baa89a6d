"""Transformers (issue 25): localisation, repair and scale on ViT and GPT models.

Three parts, each written into ``transformers.{json,md}`` (and the suite's own report files):

* ``ace``: from a fresh process with no compile cache (compile included), exact ACE over every
  attention head and MLP neuron of ``mnist-vit-badnets`` (2 blocks: 2 × 4 heads + 2 × 128 neurons,
  16 values) on 256 triggered training images with the repair code's backdoor effect, and causal
  tracing over every (layer, position) of the residual stream (``embed``, ``blk1``, ``blk2`` × 17
  tokens) restoring the triggered run into the clean one (``x_corrupt`` = the clean images; target:
  the backdoor's class) — which tokens carry the trigger. Targets: ACE ≤ 60 s, tracing ≤ 30 s.
* ``suite``: ``jr.suite.run("backdoor", entries=[mnist-vit-badnets, fashion-vit-badnets,
  tokens-gpt-badnets], ...)`` — every figure with seeds, intervals and paired tests. Target: clean
  accuracy ≥ 97% (MNIST) / ≥ 85% (Fashion) with attack success ≥ 95% before; after the best method,
  attack success ≤ 1% with ≤ 1 point lost.
* ``gpt2``: a GPT-2 124M configuration with random weights written as a Hugging Face checkpoint
  (``config.json`` + ``model.safetensors``), loaded with ``jr.convert.from_huggingface`` (64 tokens,
  last-position head), then ACE over the 3,072 MLP neurons of one block on 32 sequences of 64 tokens;
  time and peak memory (a benchmark, no target).

Usage::

    python experiments/transformers.py --data-dir ../shared/data/images [--parts ace suite gpt2]
        [--seeds 3] [--methods ace-finetune random-finetune ace-pso] [--gpt2-values 4] [--out experiments/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENTRIES = ("mnist-vit-badnets", "fashion-vit-badnets", "tokens-gpt-badnets")
GOALS = {"ace_s": 60.0, "trace_s": 30.0, "attack_after": 0.01, "drop_points": 1.0,
         "before": {"mnist-vit-badnets": (0.97, 0.95), "fashion-vit-badnets": (0.85, 0.95)}}


def cold_ace(data_dir: str) -> dict:
    """Runs in a fresh process: ACE and causal tracing on the MNIST ViT, each timed with its compile."""
    t_start = time.perf_counter()
    import jax.numpy as jnp

    import jaxrepair as jr

    t_import = time.perf_counter() - t_start
    bench = jr.zoo.load("mnist-vit-badnets", data_dir=data_dir, progress=False)
    task = jr.repair.from_zoo(bench, seed=0)
    batch = {k: np.asarray(v)[:256] for k, v in task.localize_batch.items() if k in ("x", "x_cf")}
    sites = jr.models.hidden_sites(bench.model)
    info = jr.models.sites(bench.model)
    t = time.perf_counter()
    loc = jr.causal.ace(bench.model, batch, task.effect, sites=sites)
    ace_s = time.perf_counter() - t
    clean = np.asarray(bench.splits["train"]["x"][:256])
    trig = np.asarray(bench.prop.trigger.stamp(jnp.asarray(clean)))
    t = time.perf_counter()
    tr = jr.causal.causal_trace(bench.model, trig, x_corrupt=clean, target=bench.entry.target,
                                sites=["embed", "blk1", "blk2"])
    trace_s = time.perf_counter() - t
    out = Path(tempfile.mkdtemp()) / "trace.png"
    tr.plot(out)
    return {"import_s": t_import, "ace_s": ace_s, "trace_s": trace_s, "process_s": time.perf_counter() - t_start,
            "ace_units": {s: int(info[s].units) for s in sites}, "ace_rows": int(len(batch["x"])), "ace_values": 16,
            "ace_top": [{"site": n.site, "unit": n.unit, "score": n.score} for n in loc.top(10)],
            "trace": tr.to_json(), "trace_plot": str(out)}


def gpt2_checkpoint(folder: Path, seed: int = 0) -> int:
    """Writes GPT-2 small's configuration (124M parameters) with random weights (N(0, 0.02), LayerNorm
    1 / 0) as a Hugging Face checkpoint. Returns the parameter count."""
    from safetensors.numpy import save_file

    d, layers, vocab, positions = 768, 12, 50257, 1024
    rng = np.random.default_rng(seed)
    w = lambda *s: rng.normal(0, 0.02, s).astype(np.float32)  # noqa: E731
    t = {"transformer.wte.weight": w(vocab, d), "transformer.wpe.weight": w(positions, d),
         "transformer.ln_f.weight": np.ones(d, np.float32), "transformer.ln_f.bias": np.zeros(d, np.float32)}
    for i in range(layers):
        h = f"transformer.h.{i}."
        t |= {h + "ln_1.weight": np.ones(d, np.float32), h + "ln_1.bias": np.zeros(d, np.float32),
              h + "ln_2.weight": np.ones(d, np.float32), h + "ln_2.bias": np.zeros(d, np.float32),
              h + "attn.c_attn.weight": w(d, 3 * d), h + "attn.c_attn.bias": np.zeros(3 * d, np.float32),
              h + "attn.c_proj.weight": w(d, d), h + "attn.c_proj.bias": np.zeros(d, np.float32),
              h + "mlp.c_fc.weight": w(d, 4 * d), h + "mlp.c_fc.bias": np.zeros(4 * d, np.float32),
              h + "mlp.c_proj.weight": w(4 * d, d), h + "mlp.c_proj.bias": np.zeros(d, np.float32)}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(t, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": vocab, "n_positions": positions,
        "n_embd": d, "n_layer": layers, "n_head": 12, "n_inner": None, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}))
    return int(sum(v.size for v in t.values()))


def cold_gpt2(values: int, block: int) -> dict:
    """Runs in a fresh process: load the 124M checkpoint, ACE over one block's MLP neurons."""
    import jaxrepair as jr
    from jaxrepair.causal import TargetOutput

    folder = Path(tempfile.mkdtemp()) / "gpt2-124m-random"
    n_params = gpt2_checkpoint(folder)
    t = time.perf_counter()
    net = jr.convert.from_huggingface(folder, seq_len=64, head="last")
    load_s = time.perf_counter() - t
    ids = np.random.default_rng(1).integers(0, 50257, (32, 64)).astype(np.float32)
    site = f"blk{block}.fc"
    t = time.perf_counter()
    loc = jr.causal.ace(net, ids, TargetOutput(target=11), sites=[site], num_values=values, progress=True)
    ace_s = time.perf_counter() - t
    return {"parameters": n_params, "load_s": load_s, "ace_s": ace_s, "site": site,
            "units": int(jr.models.sites(net)[site].units), "values": values, "sequences": 32, "tokens": 64,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "top": [{"unit": n.unit, "score": n.score} for n in loc.top(5)]}


def in_fresh_process(part: str, args) -> dict:
    env = {**os.environ, "JAXREPAIR_NO_COMPILE_CACHE": "1", "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    cmd = [sys.executable, __file__, "--child", part, "--data-dir", str(args.data_dir),
           "--gpt2-values", str(args.gpt2_values), "--gpt2-block", str(args.gpt2_block)]
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{part} failed:\n{r.stderr[-4000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t
    return out


def markdown(doc: dict) -> str:
    lines = ["# Transformers: localisation, repair and scale", "",
             f"Measured {doc['date']} on {doc['machine']}, no GPU; `{doc['command']}`.", ""]
    if "ace" in doc:
        a = doc["ace"]
        lines += ["## ACE and causal tracing on the MNIST ViT (fresh process, no compile cache)", "",
                  "| step | measured (s) | target (s) | met |", "|---|---|---|---|",
                  f"| ACE: {sum(a['ace_units'].values())} units ({', '.join(f'{s} {u}' for s, u in a['ace_units'].items())}) × "
                  f"{a['ace_values']} values × {a['ace_rows']} images | {a['ace_s']:.1f} | {GOALS['ace_s']:.0f} | "
                  f"{'yes' if a['ace_s'] <= GOALS['ace_s'] else '**no**'} |",
                  f"| causal tracing: 3 layers × 17 positions, 256 images | {a['trace_s']:.1f} | {GOALS['trace_s']:.0f} | "
                  f"{'yes' if a['trace_s'] <= GOALS['trace_s'] else '**no**'} |",
                  f"| the process in all (imports {a['import_s']:.1f} s, zoo load, both steps) | {a['wall_s']:.1f} | | |", "",
                  "ACE's top 10: " + ", ".join(f"{n['site']}[{n['unit']}]" for n in a["ace_top"]) + ".", "",
                  f"Causal tracing: P(target) on the triggered images {a['trace']['p_clean']:.3f}, on the clean ones "
                  f"{a['trace']['p_corrupt']:.3f}; restoring one (layer, position) of the triggered run into the clean run:", "",
                  "![causal tracing](transformers_trace.png)", ""]
    if "suite" in doc:
        lines += ["## Repair (the suite's backdoor family on the transformer entries)", "", doc["suite"]["summary"], "",
                  f"The whole report: [suite_backdoor.md]({doc['suite']['report']}).", ""]
    if "gpt2" in doc:
        g = doc["gpt2"]
        lines += ["## GPT-2 124M (random weights) from safetensors", "",
                  f"{g['parameters'] / 1e6:.1f}M parameters loaded in {g['load_s']:.1f} s; exact ACE over the "
                  f"{g['units']} MLP neurons of `{g['site']}` × {g['values']} values on {g['sequences']} sequences of "
                  f"{g['tokens']} tokens (effect: one next-token logit) took {g['ace_s']:.0f} s with compilation; peak "
                  f"resident memory {g['peak_rss_gib']:.1f} GiB (the process, checkpoint writing included).", ""]
    return "\n".join(lines)


def suite_summary(store: Path, entries) -> str:
    """Per entry: before, then the best method after (lowest attack success within the accuracy target)."""
    import jaxrepair as jr

    rows = jr.suite.report(store, store.parent)["board"]["rows"]
    lines = ["| entry | clean accuracy before | attack success before | before as targeted | best method | "
             "attack success after [95% CI] | Δ accuracy pts [95% CI] | seeds | target met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        cands = [r for r in rows if r["entry"] == e]
        if not cands:
            continue
        ok = [r for r in cands if r["accuracy_change_points"] >= -GOALS["drop_points"] and not r["degenerate_seeds"]]
        best = min(ok or cands, key=lambda r: r["violation_after"])
        met = bool(ok) and best["violation_after"] <= GOALS["attack_after"]
        ci, acc = best["ci95"]["violation_after"], best["ci95"]["accuracy_change_points"]
        acc_goal, asr_goal = GOALS["before"].get(e, (None, None))
        before = ("–" if acc_goal is None else
                  f"{'yes' if best['accuracy_before'] >= acc_goal and best['violation_before'] >= asr_goal else '**no**'} "
                  f"(≥ {acc_goal:.0%} / ≥ {asr_goal:.0%})")
        lines.append(f"| {e} | {best['accuracy_before']:.2%} | {best['violation_before']:.2%} | {before} | {best['method']} | "
                     f"{best['violation_after']:.2%} [{ci[0]:.2%}, {ci[1]:.2%}] | {best['accuracy_change_points']:+.2f} "
                     f"[{acc[0]:+.2f}, {acc[1]:+.2f}] | {best['seeds']} | {'yes' if met else '**no**'} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("JAXREPAIR_DATA"))
    ap.add_argument("--parts", nargs="+", default=["ace", "suite", "gpt2"], choices=["ace", "suite", "gpt2"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=["ace-finetune", "random-finetune", "ace-pso"])
    ap.add_argument("--gpt2-values", type=int, default=4)
    ap.add_argument("--gpt2-block", type=int, default=12)
    ap.add_argument("--out", default="experiments/results")
    ap.add_argument("--child", choices=["ace", "gpt2"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "ace":
        print(json.dumps(cold_ace(args.data_dir)))
        return
    if args.child == "gpt2":
        print(json.dumps(cold_gpt2(args.gpt2_values, args.gpt2_block)))
        return
    if not args.data_dir:
        raise SystemExit("--data-dir (or $JAXREPAIR_DATA): the folder holding mnist/ and fashion-mnist/")
    import shutil

    import jaxrepair as jr
    from jaxrepair.suite import machine

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "transformers.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc.update({"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                "command": "python experiments/transformers.py " + " ".join(sys.argv[1:] if argv is None else argv)})
    for e in ENTRIES:  # trained (and cached) before anything is timed
        jr.zoo.load(e, data_dir=args.data_dir, progress=True)
    if "ace" in args.parts:
        doc["ace"] = in_fresh_process("ace", args)
        shutil.copy(doc["ace"].pop("trace_plot"), out / "transformers_trace.png")
        print(f"ACE {doc['ace']['ace_s']:.1f} s, tracing {doc['ace']['trace_s']:.1f} s", flush=True)
    if "suite" in args.parts:
        folder = out / "transformers-suite"
        jr.suite.run("backdoor", folder, methods=args.methods, seeds=args.seeds, entries=list(ENTRIES),
                     data_dir=args.data_dir, progress=True, note="experiments/transformers.py: the transformer entries")
        store = folder / "suite_backdoor.sqlite"
        doc["suite"] = {"summary": suite_summary(store, ENTRIES), "report": "transformers-suite/suite_backdoor.md",
                        "methods": args.methods, "seeds": args.seeds}
    if "gpt2" in args.parts:
        doc["gpt2"] = in_fresh_process("gpt2", args)
        print(f"GPT-2 ACE {doc['gpt2']['ace_s']:.0f} s, peak {doc['gpt2']['peak_rss_gib']:.1f} GiB", flush=True)
    path.write_text(json.dumps(doc, indent=2, default=str))
    (out / "transformers.md").write_text(markdown(doc))
    print(f"wrote {path} and {out / 'transformers.md'}")


if __name__ == "__main__":
    main()
