"""Converters: models from ONNX, PyTorch and Keras into jaxrepair, and back out to ONNX and ``.nnet``.

>>> net = jr.convert.from_onnx("model.onnx")            # graph models; every tensor is a site
>>> net = jr.convert.from_torch(module, example_input)   # via ONNX export, in memory
>>> net = jr.convert.from_state_dict("w.safetensors", ["Linear", "ReLU", "Linear"], input_shape=(13,))
>>> net = jr.convert.from_keras("model.keras")          # .keras / .h5, read without Keras
>>> net = jr.convert.from_nnet("ACASXU_1_1.nnet")        # .nnet (or .nnet.xz)
>>> net = jr.convert.from_huggingface("gpt2-folder/")     # local GPT-2 / ViT config.json + safetensors
>>> jr.convert.to_onnx(repaired, "model.repaired.onnx")  # checked with onnx.checker
>>> jr.convert.to_nnet(repaired, "model.repaired.nnet")  # fully connected ReLU networks

:func:`load_any` picks the reader from the file name; :func:`export_like` writes a model back in
the format another file came in (used by ``jaxrepair repair`` to hand repaired models back).
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxrepair.convert._huggingface import from_huggingface
from jaxrepair.convert._keras import from_keras
from jaxrepair.convert._nnet import from_nnet, network_from_nnet, nnet_text, parse_nnet, to_nnet
from jaxrepair.convert._onnx_export import to_onnx
from jaxrepair.convert._onnx_import import SUPPORTED, ConversionError, from_onnx
from jaxrepair.convert._torch import from_state_dict, from_torch, load_state_dict, parse_spec

#: File suffix → the format name used in model metadata and by :func:`export_like`.
FORMATS = {".onnx": "onnx", ".keras": "keras", ".h5": "keras", ".nnet": "nnet", ".npz": "jaxrepair"}
#: Source format → the file suffix its repaired models are exported to (Keras models go to ONNX).
EXPORTS = {"onnx": ".onnx", "nnet": ".nnet", "keras": ".onnx", "huggingface": ".onnx"}


def load_any(path: str | os.PathLike, **kw):
    """A model from any supported file: ``.npz`` (jaxrepair), ``.onnx``, ``.keras``/``.h5``, ``.nnet[.xz]``,
    or a Hugging Face checkpoint folder (``config.json`` + ``model.safetensors``)."""
    from jaxrepair.models import load

    path = Path(path)
    if path.is_dir():
        return from_huggingface(path, **kw)
    fmt = source_format(path)
    if fmt == "nnet":
        return from_nnet(path)
    if fmt == "onnx":
        return from_onnx(path, **kw)
    if fmt == "keras":
        return from_keras(path)
    if fmt == "jaxrepair":
        return load(path)
    raise ConversionError(f"{path}: unknown model format {path.suffix!r}; supported: {', '.join(sorted(FORMATS))}, .nnet.xz")


def source_format(path: str | os.PathLike) -> str | None:
    """``"onnx"``, ``"keras"``, ``"nnet"``, ``"jaxrepair"``, ``"huggingface"`` (a checkpoint folder) or
    None, from a file name."""
    if Path(path).is_dir():
        return "huggingface" if (Path(path) / "config.json").exists() else None
    name = Path(path).name.lower()
    if name.endswith(".nnet") or name.endswith(".nnet.xz"):
        return "nnet"
    return FORMATS.get(Path(path).suffix.lower())


def export_like(model, source: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """Writes ``model`` to ``path`` in the format ``source`` came in, where that format supports export.

    ONNX inputs go back to ONNX, ``.nnet`` inputs to ``.nnet``; models from Keras or PyTorch state
    dicts go to ONNX (the exchange format both can read). Returns the written path, or None when
    the source was already a jaxrepair file.
    """
    fmt = source_format(source)
    if fmt == "jaxrepair" or fmt is None:
        return None
    if fmt == "nnet":
        return to_nnet(model, path)
    to_onnx(model, path)
    return Path(path)


__all__ = [
    "ConversionError", "EXPORTS", "FORMATS", "SUPPORTED", "export_like", "from_huggingface", "from_keras", "from_nnet", "from_onnx", "from_state_dict",
    "from_torch", "load_any", "load_state_dict", "network_from_nnet", "nnet_text", "parse_nnet", "parse_spec", "source_format", "to_nnet", "to_onnx",
]
