"""Hugging Face checkpoints (GPT-2, ViT) → :class:`~jaxrepair.models.Network`, from local files.

A checkpoint folder as ``save_pretrained`` writes it: ``config.json`` and ``model.safetensors``
(nothing is downloaded; the folder is only read). The network is the one :func:`jaxrepair.models.gpt`
or :func:`jaxrepair.models.vit` builds, with every weight taken from the file and checked for shape:

- ``gpt2`` (``GPT2Model`` / ``GPT2LMHeadModel``): token and position embeddings, pre-norm blocks
  whose fused ``c_attn`` (Conv1D, ``[in, 3·out]``) is split into q, k, v; tanh GELU
  (``gelu_new``); ``ln_f``; the language-model head tied to the token embeddings (``lm_head.weight``
  when the file has its own). ``head="all"``: logits of every position ``[seq_len, vocab]``, as
  ``GPT2LMHeadModel``; ``head="last"``: the last position's ``[vocab]`` (a next-token classifier).
  ``seq_len`` fixes the sequence length (≤ ``n_positions``).
- ``vit`` (``ViTForImageClassification``): the patch projection (a strided conv), the class token,
  position embeddings, blocks with separate query/key/value Linears (torch ``[out, in]``, transposed),
  exact GELU, the final LayerNorm and the classifier on the class token. jaxrepair images are NHWC:
  ``pixel_values`` ``[N, C, H, W]`` become ``x = pixel_values.transpose(0, 2, 3, 1)``.

Not read: attention masks (every position attends as in a full-length causal / bidirectional run),
GPT-2's ``scale_attn_by_inverse_layer_idx`` and ``reorder_and_upcast_attn`` (refused when set),
ViT's pooler (unused by the classifier) and interpolated position embeddings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np

from jaxrepair.convert._onnx_import import ConversionError
from jaxrepair.models import Network, check_finite, gpt, vit

ARCHITECTURES = ("gpt2", "vit")


def _read(folder) -> tuple[Path, dict, dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder}: not a checkpoint folder (no such directory)")
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise ConversionError(f"{folder}: no config.json (a Hugging Face checkpoint folder holds config.json and model.safetensors)")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{cfg_path}: not valid JSON ({e})") from None
    weights = folder / "model.safetensors"
    if not weights.exists():
        shards = sorted(folder.glob("model-*.safetensors"))
        if not shards:
            bins = sorted(p.name for p in folder.glob("*.bin"))
            raise ConversionError(f"{folder}: no model.safetensors" + (f" (found {bins}: re-save with "
                                  "save_pretrained(..., safe_serialization=True); pickled .bin files are not read)" if bins else ""))
    else:
        shards = [weights]
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ImportError("reading safetensors checkpoints needs the 'safetensors' package: pip install safetensors") from None
    tensors: dict = {}
    for shard in shards:
        try:
            tensors.update(load_file(str(shard)))
        except Exception as e:  # noqa: BLE001 - a corrupt file, named
            raise ConversionError(f"{shard}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return folder, config, tensors


class _Weights:
    """Looks weights up by name (with or without the model's prefix), checking shape and finiteness."""

    def __init__(self, where: str, tensors: dict, prefixes: tuple[str, ...]):
        self.where, self.tensors, self.prefixes = where, tensors, prefixes

    def has(self, name: str) -> bool:
        return any(p + name in self.tensors for p in self.prefixes)

    def __call__(self, name: str, shape) -> np.ndarray:
        for p in self.prefixes:
            if p + name in self.tensors:
                v = np.asarray(self.tensors[p + name], np.float32)
                if tuple(v.shape) != tuple(shape):
                    raise ConversionError(f"{self.where}: tensor {p + name!r} has shape {tuple(v.shape)}, but config.json "
                                          f"implies {tuple(shape)}")
                return v
        raise ConversionError(f"{self.where}: tensor {self.prefixes[0] + name!r} is missing from the checkpoint")


def _int(config: dict, key: str, where: str) -> int:
    v = config.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConversionError(f"{where}: config.json's {key!r} must be a positive integer, got {v!r}")
    return v


def _gpt2(where: str, config: dict, tensors: dict, seq_len, head: str) -> Network:
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if config.get(flag):
            raise ConversionError(f"{where}: config.json sets {flag}, which jaxrepair's GPT-2 does not implement")
    act = config.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ConversionError(f"{where}: activation_function {act!r} is not supported (gelu_new, gelu_pytorch_tanh)")
    vocab, positions = _int(config, "vocab_size", where), _int(config, "n_positions", where)
    dim, depth, heads = _int(config, "n_embd", where), _int(config, "n_layer", where), _int(config, "n_head", where)
    mlp = config.get("n_inner") or 4 * dim
    seq_len = positions if seq_len is None else int(seq_len)
    if not 1 <= seq_len <= positions:
        raise ConversionError(f"{where}: seq_len {seq_len} is beyond the position table ({positions} positions)")
    if dim % heads:
        raise ConversionError(f"{where}: n_embd {dim} is not a multiple of n_head {heads}")
    net = gpt(vocab, seq_len, vocab, key=jax.random.key(0), dim=dim, depth=depth, heads=heads, mlp=mlp,
              eps=float(config.get("layer_norm_epsilon", 1e-5)), head=head)
    w = _Weights(where, tensors, ("transformer.", ""))
    wte = w("wte.weight", (vocab, dim))
    params = {"wte": {"table": wte}, "embed": {"value": w("wpe.weight", (positions, dim))[:seq_len]}}
    for i in range(depth):
        b, h = f"blk{i + 1}", f"h.{i}."
        qkv, qkv_b = w(h + "attn.c_attn.weight", (dim, 3 * dim)), w(h + "attn.c_attn.bias", (3 * dim,))
        for j, part in enumerate(("q", "k", "v")):
            params[f"{b}.{part}"] = {"kernel": qkv[:, j * dim:(j + 1) * dim], "bias": qkv_b[j * dim:(j + 1) * dim]}
        params[f"{b}.o"] = {"kernel": w(h + "attn.c_proj.weight", (dim, dim)), "bias": w(h + "attn.c_proj.bias", (dim,))}
        for ln, name in (("ln1", "ln_1"), ("ln2", "ln_2")):
            params[f"{b}.{ln}"] = {"scale": w(h + f"{name}.weight", (dim,)), "bias": w(h + f"{name}.bias", (dim,))}
        params[f"{b}.fc.pre"] = {"kernel": w(h + "mlp.c_fc.weight", (dim, mlp)), "bias": w(h + "mlp.c_fc.bias", (mlp,))}
        params[f"{b}.proj"] = {"kernel": w(h + "mlp.c_proj.weight", (mlp, dim)), "bias": w(h + "mlp.c_proj.bias", (dim,))}
    params["ln"] = {"scale": w("ln_f.weight", (dim,)), "bias": w("ln_f.bias", (dim,))}
    lm = _Weights(where, tensors, ("",))
    params["logits"] = {"kernel": (lm("lm_head.weight", (vocab, dim)) if lm.has("lm_head.weight") else wte).T.copy()}
    return _finish(net, params, where, "gpt2", config)


def _vit(where: str, config: dict, tensors: dict) -> Network:
    if config.get("hidden_act", "gelu") != "gelu":
        raise ConversionError(f"{where}: hidden_act {config.get('hidden_act')!r} is not supported (gelu)")
    if config.get("qkv_bias", True) is False:
        raise ConversionError(f"{where}: qkv_bias=false is not supported")
    size, patch, c = _int(config, "image_size", where), _int(config, "patch_size", where), _int(config, "num_channels", where)
    dim, depth = _int(config, "hidden_size", where), _int(config, "num_hidden_layers", where)
    heads, mlp = _int(config, "num_attention_heads", where), _int(config, "intermediate_size", where)
    w = _Weights(where, tensors, ("vit.", ""))
    top = _Weights(where, tensors, ("",))
    if not top.has("classifier.weight"):
        raise ConversionError(f"{where}: no classifier.weight: only ViTForImageClassification checkpoints are read")
    labels = np.shape(tensors["classifier.weight"])[0]
    if size % patch:
        raise ConversionError(f"{where}: image_size {size} is not a multiple of patch_size {patch}")
    tokens = (size // patch) ** 2
    net = vit((size, size, c), labels, key=jax.random.key(0), patch=patch, dim=dim, depth=depth, heads=heads, mlp=mlp,
              eps=float(config.get("layer_norm_eps", 1e-12)))
    e = "embeddings."
    kernel = w(e + "patch_embeddings.projection.weight", (dim, c, patch, patch))
    params = {
        "patches": {"kernel": np.transpose(kernel, (2, 3, 1, 0)).copy(), "bias": w(e + "patch_embeddings.projection.bias", (dim,))},
        "tokens": {"token": w(e + "cls_token", (1, 1, dim))[0]},
        "embed": {"value": w(e + "position_embeddings", (1, tokens + 1, dim))[0]},
    }

    def linear(name, fan_in, fan_out):  # torch Linear: weight [out, in]
        return {"kernel": w(name + ".weight", (fan_out, fan_in)).T.copy(), "bias": w(name + ".bias", (fan_out,))}

    for i in range(depth):
        b, h = f"blk{i + 1}", f"encoder.layer.{i}."
        for part, name in (("q", "query"), ("k", "key"), ("v", "value")):
            params[f"{b}.{part}"] = linear(h + f"attention.attention.{name}", dim, dim)
        params[f"{b}.o"] = linear(h + "attention.output.dense", dim, dim)
        for ln, name in (("ln1", "layernorm_before"), ("ln2", "layernorm_after")):
            params[f"{b}.{ln}"] = {"scale": w(h + f"{name}.weight", (dim,)), "bias": w(h + f"{name}.bias", (dim,))}
        params[f"{b}.fc.pre"] = linear(h + "intermediate.dense", dim, mlp)
        params[f"{b}.proj"] = linear(h + "output.dense", mlp, dim)
    params["ln"] = {"scale": w("layernorm.weight", (dim,)), "bias": w("layernorm.bias", (dim,))}
    params["logits"] = {"kernel": top("classifier.weight", (labels, dim)).T.copy(), "bias": top("classifier.bias", (labels,))}
    return _finish(net, params, where, "vit", config)


def _finish(net: Network, params: dict, where: str, arch: str, config: dict) -> Network:
    try:
        check_finite(params, f"{where}: weights of node ")
    except ValueError as e:
        raise ConversionError(str(e)) from None
    want = {k: set(v) for k, v in net.params().items()}
    got = {k: set(v) for k, v in params.items()}
    if set(want) != set(got) or any(not got[k] <= want[k] or want[k] - got[k] - {"bias"} for k in want):
        # a mapping bug, never a user's mistake (a layer without a bias, as GPT-2's LM head, may drop it)
        raise AssertionError(f"huggingface {arch}: parameters {got} do not match the graph's {want}")
    meta = dict(net.meta)
    meta.update({"format": "huggingface", "source": where, "huggingface": {"model_type": arch,
                 "architectures": config.get("architectures"), "transformers_version": config.get("transformers_version")}})
    return Network(net.graph, params, meta=meta)


def from_huggingface(folder: str | os.PathLike, *, seq_len: int | None = None, head: str = "all") -> Network:
    """Loads a local Hugging Face GPT-2 or ViT checkpoint folder (see the module docstring).

    Args:
      seq_len: GPT-2's sequence length (default: ``n_positions``).
      head: GPT-2's output: ``"all"`` positions' logits, or the ``"last"`` position's.
    """
    folder, config, tensors = _read(folder)
    where = str(folder)
    arch = config.get("model_type")
    if arch not in ARCHITECTURES:
        raise ConversionError(f"{where}: model_type {arch!r} is not supported; jaxrepair reads {', '.join(ARCHITECTURES)}")
    if arch == "gpt2":
        if head not in ("all", "last"):
            raise ConversionError(f"head must be 'all' or 'last', got {head!r}")
        return _gpt2(where, config, tensors, seq_len, head)
    if seq_len is not None:
        raise ConversionError(f"{where}: seq_len applies to GPT-2; a ViT's sequence is fixed by image_size and patch_size")
    return _vit(where, config, tensors)


__all__ = ["ARCHITECTURES", "from_huggingface"]
