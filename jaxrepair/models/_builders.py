"""Model constructors from short configs: MLPs, small CNNs, ResNets and transformers (ViT, GPT).

Site names are stable and readable: an MLP's hidden layer ``i`` (1-based) has the pre-activation
site ``layer{i}.pre`` and the post-activation site ``layer{i}``; the output is ``logits``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.models._graph import INPUT, Graph, Node
from jaxrepair.models._network import Network


class _Builder:
    """Accumulates nodes and initial params; each ``add`` returns the new node's name."""

    def __init__(self, key: jax.Array, input_shape):
        self.key = key
        self.nodes: list[Node] = []
        self.params: dict = {}
        self.input_shape = tuple(int(s) for s in input_shape)
        self.last = INPUT

    def _next_key(self):
        self.key, k = jax.random.split(self.key)
        return k

    def add(self, name, op, inputs=None, params=None, **attrs) -> str:
        self.nodes.append(Node.make(name, op, inputs if inputs is not None else self.last, **attrs))
        if params:
            self.params[name] = params
        self.last = name
        return name

    def dense(self, name, fan_in, fan_out, *, gain=2.0, inputs=None):
        w = jax.random.normal(self._next_key(), (fan_in, fan_out)) * np.sqrt(gain / fan_in)
        return self.add(name, "dense", inputs, params={"kernel": w, "bias": jnp.zeros(fan_out)})

    def layernorm(self, name, width, inputs=None, eps=1e-5):
        return self.add(name, "layernorm", inputs, params={"scale": jnp.ones(width), "bias": jnp.zeros(width)}, eps=eps)

    def transformer_block(self, p, x, tokens, dim, heads, mlp, *, causal, gelu, eps=1e-5, pad=None):
        """A pre-norm transformer block (GPT-2 / ViT): ``x + attn(ln1(x))``, then ``+ mlp(ln2(·))``.

        Sites: ``{p}.ln1``; ``{p}.q``/``.k``/``.v`` [tokens, dim] and their per-head views
        ``.q.heads`` … [heads, tokens, head_dim]; ``{p}.scores`` [heads, tokens, tokens] (``.masked``
        when causal); ``{p}.attn`` (the attention weights); ``{p}.z`` [heads, tokens, head_dim];
        ``{p}.heads`` [tokens, head_dim, heads] (a head per channel); ``{p}.o`` (the attention's
        output projection); ``{p}.mid`` (the residual stream after attention); ``{p}.ln2``;
        ``{p}.fc.pre``/``{p}.fc`` [tokens, mlp] (the MLP neurons, before and after GELU);
        ``{p}.proj``; ``{p}`` (the residual stream after the block).
        """
        if dim % heads:
            raise ValueError(f"transformer width {dim} is not a multiple of its {heads} heads")
        dh = dim // heads
        h = self.layernorm(f"{p}.ln1", dim, inputs=x, eps=eps)
        split = []
        for part in ("q", "k", "v"):
            self.dense(f"{p}.{part}", dim, dim, gain=1.0, inputs=h)
            self.add(f"{p}.{part}.split", "reshape", shape=(tokens, heads, dh))
            split.append(self.add(f"{p}.{part}.heads", "transpose", perm=(1, 0, 2)))
        self.add(f"{p}.scores", "matmul", inputs=(split[0], split[1]), transpose_b=True, scale=float(1.0 / np.sqrt(dh)))
        if causal:
            self.add(f"{p}.masked", "causal_mask")
        if pad is not None:  # keys holding the padding id are never attended to
            self.add(f"{p}.padded", "key_mask", inputs=(self.last, INPUT), pad=int(pad))
        attn = self.add(f"{p}.attn", "softmax", axis=-1)
        self.add(f"{p}.z", "matmul", inputs=(attn, split[2]))
        self.add(f"{p}.heads", "heads")
        self.add(f"{p}.merge", "transpose", perm=(0, 2, 1))
        self.add(f"{p}.merge.flat", "reshape", shape=(tokens, dim))
        o = self.dense(f"{p}.o", dim, dim, gain=1.0)
        mid = self.add(f"{p}.mid", "add", inputs=(x, o))
        self.layernorm(f"{p}.ln2", dim, eps=eps)
        self.dense(f"{p}.fc.pre", dim, mlp, gain=1.0)
        self.add(f"{p}.fc", "gelu", approximate=gelu)
        out = self.dense(f"{p}.proj", mlp, dim, gain=1.0)
        return self.add(p, "add", inputs=(mid, out))

    def conv(self, name, c_in, c_out, k=3, strides=1, *, bias=True, inputs=None):
        w = jax.random.normal(self._next_key(), (k, k, c_in, c_out)) * np.sqrt(2.0 / (k * k * c_in))
        p = {"kernel": w, **({"bias": jnp.zeros(c_out)} if bias else {})}
        return self.add(name, "conv2d", inputs, params=p, strides=(strides, strides), padding="SAME")

    def batchnorm(self, name, c):
        p = {"scale": jnp.ones(c), "bias": jnp.zeros(c), "mean": jnp.zeros(c), "var": jnp.ones(c)}
        return self.add(name, "batchnorm", params=p, eps=1e-5)

    def act(self, name, activation):
        op, attrs = _activation(activation)
        return self.add(name, op, **attrs)

    def build(self, meta=None) -> Network:
        return Network(Graph(tuple(self.nodes), self.input_shape, self.last), self.params, meta=meta)


def _activation(activation: str):
    if activation.startswith("leaky_relu"):
        alpha = float(activation.split(":")[1]) if ":" in activation else 0.01
        return "leaky_relu", {"alpha": alpha}
    if activation not in ("relu", "sigmoid", "tanh", "identity"):
        raise ValueError(f"unknown activation {activation!r}; use relu, leaky_relu[:alpha], sigmoid, tanh")
    return activation, {}


def mlp(
    widths: Sequence[int],
    *,
    key: jax.Array,
    activation: str = "relu",
    softmax: bool = False,
    normalize: tuple | None = None,
) -> Network:
    """A fully connected network ``widths[0] → … → widths[-1]``.

    ``normalize=(mean, std)`` prepends a fixed ``standardize`` node (site ``input.norm``), so the
    model takes raw features (e.g. integer codes whose sensitive values are flipped as they are).

    >>> import jax, jaxrepair as jr
    >>> list(jr.sites(jr.models.mlp([13, 8, 2], key=jax.random.key(0))))
    ['input', 'layer1.pre', 'layer1', 'logits']
    """
    if len(widths) < 2:
        raise ValueError(f"an MLP needs at least input and output widths, got {list(widths)}")
    b = _Builder(key, (widths[0],))
    if normalize is not None:
        mean, std = (jnp.asarray(v, jnp.float32) for v in normalize)
        b.add("input.norm", "standardize", params={"mean": mean, "var": jnp.maximum(std, 1e-6) ** 2})
    for i, (fi, fo) in enumerate(zip(widths[:-2], widths[1:-1]), start=1):
        b.dense(f"layer{i}.pre", fi, fo)
        b.act(f"layer{i}", activation)
    b.dense("logits", widths[-2], widths[-1])
    if softmax:
        b.add("probs", "softmax")
    return b.build({"config": {"kind": "mlp", "widths": list(widths), "activation": activation}})


def cnn(
    input_shape: Sequence[int],
    channels: Sequence[int],
    dense: Sequence[int],
    num_classes: int,
    *,
    key: jax.Array,
    pool: str = "max",
    batchnorm: bool = False,
    activation: str = "relu",
    kernel: int = 3,
) -> Network:
    """Conv(``kernel``×``kernel``, same padding) [→ BN] → act → pool(2×2) per entry of ``channels``,
    then dense layers.

    Sites: ``conv{i}.pre`` (or ``conv{i}.bn``), ``conv{i}``, ``pool{i}``, ``flatten``,
    ``fc{j}.pre``, ``fc{j}``, ``logits``.
    """
    b = _Builder(key, input_shape)
    h, w, c = b.input_shape
    for i, co in enumerate(channels, start=1):
        b.conv(f"conv{i}.pre", c, co, kernel, bias=not batchnorm)
        if batchnorm:
            b.batchnorm(f"conv{i}.bn", co)
        b.act(f"conv{i}", activation)
        b.add(f"pool{i}", "maxpool" if pool == "max" else "avgpool", window=(2, 2), strides=(2, 2), padding="VALID")
        h, w, c = h // 2, w // 2, co
    b.add("flatten", "flatten")
    width = h * w * c
    for j, wo in enumerate(dense, start=1):
        b.dense(f"fc{j}.pre", width, wo)
        b.act(f"fc{j}", activation)
        width = wo
    b.dense("logits", width, num_classes)
    cfg = dict(kind="cnn", input_shape=list(input_shape), channels=list(channels), dense=list(dense),
               num_classes=num_classes, pool=pool, batchnorm=batchnorm, activation=activation,
               **({"kernel": kernel} if kernel != 3 else {}))
    return b.build({"config": cfg})


def resnet(
    input_shape: Sequence[int],
    stages: Sequence[tuple[int, int]],
    num_classes: int,
    *,
    key: jax.Array,
    stem_channels: int | None = None,
    block: str = "basic",
) -> Network:
    """A CIFAR-style ResNet (He et al., "Deep residual learning for image recognition", CVPR 2016):
    a 3×3 stem conv-BN-ReLU (stride 1, no max-pool), then ``(channels, blocks)`` stages of residual
    blocks, global average pooling and a dense head. The first block of a later stage has stride 2;
    a block whose shape changes gets a 1×1 conv-BN projection shortcut.

    ``block="basic"``: conv3×3-BN-ReLU-conv3×3-BN, output ``channels`` wide (ResNet-18/34).
    ``block="bottleneck"``: conv1×1-BN-ReLU-conv3×3-BN-ReLU-conv1×1-BN with the 3×3 conv ``channels``
    wide and the output ``4·channels`` wide (ResNet-50/101; the stride sits on the 3×3 conv, as in
    torchvision). ResNet-18: ``[(64, 2), (128, 2), (256, 2), (512, 2)]``; ResNet-50:
    ``[(64, 3), (128, 4), (256, 6), (512, 3)]`` with ``block="bottleneck"``.

    Sites of block ``s.b``: ``s{s}b{b}.conv1``, ``.bn1``, ``.relu1``, ``.conv2``, ``.bn2``
    (bottleneck: ``.relu2``, ``.conv3``, ``.bn3``), ``.proj``/``.proj_bn`` where there is a
    projection, ``.add`` and ``s{s}b{b}`` (the block's output after its ReLU).
    """
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"resnet block must be 'basic' or 'bottleneck', got {block!r}")
    expansion = 4 if block == "bottleneck" else 1
    b = _Builder(key, input_shape)
    c = b.input_shape[-1]
    stem = stem_channels or stages[0][0]
    b.conv("stem.conv", c, stem, bias=False)
    b.batchnorm("stem.bn", stem)
    x = b.act("stem", "relu")
    c = stem
    for s, (width, nblocks) in enumerate(stages, start=1):
        co = width * expansion
        for bi in range(1, nblocks + 1):
            p = f"s{s}b{bi}"
            stride = 2 if (bi == 1 and s > 1) else 1
            if block == "basic":
                b.conv(f"{p}.conv1", c, co, strides=stride, bias=False, inputs=x)
                b.batchnorm(f"{p}.bn1", co)
                b.act(f"{p}.relu1", "relu")
                b.conv(f"{p}.conv2", co, co, bias=False)
                main = b.batchnorm(f"{p}.bn2", co)
            else:
                b.conv(f"{p}.conv1", c, width, k=1, bias=False, inputs=x)
                b.batchnorm(f"{p}.bn1", width)
                b.act(f"{p}.relu1", "relu")
                b.conv(f"{p}.conv2", width, width, strides=stride, bias=False)
                b.batchnorm(f"{p}.bn2", width)
                b.act(f"{p}.relu2", "relu")
                b.conv(f"{p}.conv3", width, co, k=1, bias=False)
                main = b.batchnorm(f"{p}.bn3", co)
            short = x
            if stride != 1 or c != co:
                b.conv(f"{p}.proj", c, co, k=1, strides=stride, bias=False, inputs=x)
                short = b.batchnorm(f"{p}.proj_bn", co)
            b.add(f"{p}.add", "add", inputs=(main, short))
            x = b.act(p, "relu")
            c = co
    b.add("pool", "global_avgpool", inputs=x)
    b.dense("logits", c, num_classes)
    cfg = dict(kind="resnet", input_shape=list(input_shape), stages=[list(s) for s in stages], num_classes=num_classes,
               **({"block": block} if block != "basic" else {}),
               **({"stem_channels": stem_channels} if stem_channels else {}))
    return b.build({"config": cfg})


def vit(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    key: jax.Array,
    patch: int = 7,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    mlp: int = 128,
    eps: float = 1e-5,
) -> Network:
    """A Vision Transformer (Dosovitskiy et al., ICLR 2021) for small images: non-overlapping
    ``patch``×``patch`` patches embedded by a strided conv, a learned class token, learned position
    embeddings, ``depth`` pre-norm blocks (exact GELU), a final LayerNorm and a dense head on the
    class token.

    Sites: ``patches`` [gh, gw, dim], ``tokens`` [1 + gh·gw, dim] (with the class token),
    ``embed`` (after position embeddings), the blocks ``blk{i}`` (see
    ``_Builder.transformer_block``: ``blk{i}.heads`` are the attention heads, ``blk{i}.fc`` the MLP
    neurons), ``ln``, ``cls`` and ``logits``. ``eps``: the LayerNorms' epsilon (Hugging Face's ViT: 1e-12).
    """
    h, w, c = (int(v) for v in input_shape)
    if h % patch or w % patch:
        raise ValueError(f"vit: image {h}x{w} is not a whole number of {patch}x{patch} patches")
    b = _Builder(key, input_shape)
    tokens = (h // patch) * (w // patch)
    k = jax.random.normal(b._next_key(), (patch, patch, c, dim)) * np.sqrt(1.0 / (patch * patch * c))
    b.add("patches", "conv2d", params={"kernel": k, "bias": jnp.zeros(dim)}, strides=(patch, patch), padding="VALID")
    b.add("patches.flat", "reshape", shape=(tokens, dim))
    b.add("tokens", "prepend", params={"token": 0.02 * jax.random.normal(b._next_key(), (1, dim))})
    x = b.add("embed", "add", params={"value": 0.02 * jax.random.normal(b._next_key(), (tokens + 1, dim))})
    for i in range(1, depth + 1):
        x = b.transformer_block(f"blk{i}", x, tokens + 1, dim, heads, mlp, causal=False, gelu="none", eps=eps)
    b.layernorm("ln", dim, inputs=x, eps=eps)
    b.add("cls", "take", index=0)
    b.dense("logits", dim, num_classes, gain=1.0)
    cfg = dict(kind="vit", input_shape=[h, w, c], num_classes=num_classes, patch=patch, dim=dim, depth=depth,
               heads=heads, mlp=mlp, **({"eps": eps} if eps != 1e-5 else {}))
    return b.build({"config": cfg})


def gpt(
    vocab: int,
    seq_len: int,
    num_classes: int,
    *,
    key: jax.Array,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    mlp: int = 256,
    eps: float = 1e-5,
    head: str = "last",
    pad: int | None = None,
) -> Network:
    """A GPT-style decoder (Radford et al. 2019) used as a sequence classifier: token and learned
    position embeddings, ``depth`` pre-norm blocks with causal self-attention (tanh-approximate
    GELU, as GPT-2), a final LayerNorm and a dense head: on the last token (``head="last"``, output
    ``[num_classes]``: a sequence classifier, or the next token's logits with ``num_classes=vocab``) or
    on every token (``head="all"``, output ``[seq_len, num_classes]``: a language model's logits).
    ``pad``: a padding id; no query attends to a key holding it (pad on the left, so that the last
    token is a real one).

    Input: ``[seq_len]`` token ids per example (held as floats like every jaxrepair input; ids
    outside ``[0, vocab)`` are clipped). Sites: ``wte`` [seq_len, dim], ``embed``, the blocks
    ``blk{i}`` (``blk{i}.heads``: attention heads; ``blk{i}.fc``: MLP neurons), ``ln``, ``last`` (with
    ``head="last"``) and ``logits``.
    """
    if head not in ("last", "all"):
        raise ValueError(f"gpt head must be 'last' or 'all', got {head!r}")
    b = _Builder(key, (seq_len,))
    b.add("wte", "embed", params={"table": 0.02 * jax.random.normal(b._next_key(), (vocab, dim))})
    x = b.add("embed", "add", params={"value": 0.01 * jax.random.normal(b._next_key(), (seq_len, dim))})
    for i in range(1, depth + 1):
        x = b.transformer_block(f"blk{i}", x, seq_len, dim, heads, mlp, causal=True, gelu="tanh", eps=eps, pad=pad)
    b.layernorm("ln", dim, inputs=x, eps=eps)
    if head == "last":
        b.add("last", "take", index=seq_len - 1)
    b.dense("logits", dim, num_classes, gain=1.0)
    cfg = dict(kind="gpt", vocab=vocab, seq_len=seq_len, num_classes=num_classes, dim=dim, depth=depth, heads=heads,
               mlp=mlp, **({"eps": eps} if eps != 1e-5 else {}), **({"head": head} if head != "last" else {}),
               **({"pad": pad} if pad is not None else {}))
    return b.build({"config": cfg})


def from_config(config: Mapping | str, *, key: jax.Array) -> Network:
    """Builds a model from a short config.

    Accepts a dict (``{"kind": "mlp", "widths": [...]}``, ``{"kind": "cnn", ...}``,
    ``{"kind": "resnet", ...}``, ``{"kind": "vit", ...}``, ``{"kind": "gpt", ...}`` with the keyword
    arguments of :func:`mlp`, :func:`cnn`, :func:`resnet`, :func:`vit`, :func:`gpt`) or a string shorthand ``"mlp:13-64-32-16-8-4-2"``.
    """
    if isinstance(config, str):
        kind, _, rest = config.partition(":")
        if kind != "mlp" or not rest:
            raise ValueError(f"config string {config!r}: only 'mlp:W0-W1-...' is a string shorthand")
        return mlp([int(w) for w in rest.split("-")], key=key)
    config = dict(config)
    kind = config.pop("kind", None)
    builders = {"mlp": mlp, "cnn": cnn, "resnet": resnet, "vit": vit, "gpt": gpt}
    if kind not in builders:
        raise ValueError(f"config kind {kind!r} is not one of {sorted(builders)}")
    if kind == "resnet":
        config["stages"] = [tuple(s) for s in config["stages"]]
    return builders[kind](key=key, **config)
