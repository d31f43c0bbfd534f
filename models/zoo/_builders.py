"""The networks of the zoo, built as layer lists with torchvision/timm-style layer names.

Sparsity policy (docs/zoo.md): every conv and linear is N:M-eligible except the stem conv on
image channels (C_in = 1 or 3), patch embeddings and the final classifier, as in SR-STE and
common practice and as :mod:`nmsat.models.train` trains ``mlp`` and ``cnn`` (whose first
linear, with 64 inputs, stays N:M-eligible). Attention products
(:class:`~nmsat.models.zoo.MatMul`) have no weights and are dense.
Embedding lookups (BERT's word, position and segment tables) are not GEMMs and are left to the
host: BERT's list starts at the embedding LayerNorm.

Published references (forward MACs per image at 224 x 224, convs + linears [+ attention]):
ResNet-18 1.82 G and 11.7 M parameters, ResNet-50 4.09 G and 25.6 M, VGG-16 15.5 G and 138 M,
ViT-B/16 17.6 G and 86 M; BERT-base 110 M parameters of which about 85 M in the 12 encoder
layers. The tests of tests/models/test_zoo.py check the builders against them.

Ref: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
     CVPR 2016 (ResNet-18/50; ImageNet and CIFAR-10 stems). ResNet-50 is torchvision's v1.5:
     the stride of a bottleneck sits on its 3x3 conv, not on the first 1x1.
Ref: K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
     Recognition", ICLR 2015 (VGG-16, configuration D, three FC layers).
Ref: A. Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image
     Recognition at Scale", ICLR 2021 (ViT-B/16: 12 layers, d = 768, MLP 3072, 12 heads).
Ref: J. Devlin, M.-W. Chang, K. Lee, K. Toutanova, "BERT: Pre-training of Deep Bidirectional
     Transformers for Language Understanding", NAACL 2019 (BERT-base: 12 layers, d = 768,
     MLP 3072, 12 heads, post-LayerNorm).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from ._layers import Conv2d, Layer, Linear, MatMul
from ._model import Model, ModelError
from ._ops import GELU, Add, Norm, Pool, ReLU, Softmax

__all__ = [
    "bert_base",
    "cnn",
    "get_model",
    "mlp",
    "model_names",
    "resnet18",
    "resnet18_cifar",
    "resnet50",
    "vgg16",
    "vit_b16",
]


class _Net:
    """Appends layers and tracks the shape of the last output, so builders stay short.

    A layer reads the previous one unless its builder names other ``inputs``.
    """

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        self.input_shape = input_shape
        self.shape = input_shape
        self.layers: list[Layer] = []
        self.shapes: dict[str, tuple[int, ...]] = {"input": input_shape}

    @property
    def last(self) -> str:
        """The name of the latest output: the last layer's, or ``"input"``."""
        return self.layers[-1].name if self.layers else "input"

    def add(self, layer: Layer) -> tuple[int, ...]:
        self.layers.append(layer)
        self.shape = self.shapes[layer.name] = layer.output_shape
        return self.shape

    def conv(
        self,
        name: str,
        c_out: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        *,
        sparse: bool = True,
        source: str | None = None,
    ) -> tuple[int, ...]:
        # source: the layer (or "input") the conv reads instead of the previous layer.
        c, h, w = self.shapes[source] if source is not None else self.shape
        return self.add(
            Conv2d(
                name=name,
                inputs=(source,) if source is not None else (),
                c_in=c,
                c_out=c_out,
                kh=kernel,
                kw=kernel,
                stride=stride,
                padding=padding,
                h_in=h,
                w_in=w,
                sparse=sparse,
            )
        )

    def linear(self, name: str, c_out: int, *, sparse: bool = True) -> tuple[int, ...]:
        # (tokens, features) keeps its rows; a feature map is flattened to one row.
        tokens, c_in = self.shape if len(self.shape) == 2 else (1, math.prod(self.shape))
        return self.add(Linear(name=name, c_in=c_in, c_out=c_out, tokens=tokens, sparse=sparse))

    def pool(
        self, name: str, kind: Literal["max", "avg"], kernel: int, stride: int, padding: int = 0
    ) -> None:
        c, h, w = self.shape
        self.add(
            Pool(
                name=name,
                kind=kind,
                c=c,
                h_in=h,
                w_in=w,
                kernel=kernel,
                stride=stride,
                padding=padding,
            )
        )

    def batch_norm(self, name: str) -> None:
        self.add(Norm(name=name, kind="batch", shape=self.shape))

    def layer_norm(self, name: str) -> None:
        self.add(Norm(name=name, kind="layer", shape=self.shape))

    def relu(self, name: str) -> None:
        self.add(ReLU(name=name, shape=self.shape))

    def model(self, name: str, batch: int) -> Model:
        # The loss's softmax over the logits ends every classifier's forward pass (host).
        self.add(Softmax(name="softmax", shape=self.shape))
        return Model(name, batch, tuple(self.layers), self.input_shape)


def mlp(batch: int) -> Model:
    """Return the digits MLP of :mod:`nmsat.models.train`: 64 -> 128 -> 64 -> 10, ReLUs.

    The input layer is N:M-eligible (C_in = 64 and C_out = 128 divide by every supported M),
    as in training; only the classifier is dense.
    """
    net = _Net((64,))
    net.linear("fc1", 128)
    net.relu("relu1")
    net.linear("fc2", 64)
    net.relu("relu2")
    net.linear("fc3", 10, sparse=False)
    return net.model("mlp", batch)


def cnn(batch: int) -> Model:
    """Return the digits CNN of :mod:`nmsat.models.train` on 1x8x8 images.

    conv 3x3 1 -> 16 (dense, C_in = 1), BN, ReLU, max pool 2, conv 3x3 16 -> 32 (N:M), BN,
    ReLU, flatten, linear 512 -> 10 (dense classifier).
    """
    net = _Net((1, 8, 8))
    net.conv("conv1", 16, 3, padding=1, sparse=False)
    net.batch_norm("bn1")
    net.relu("relu1")
    net.pool("pool", "max", 2, 2)
    net.conv("conv2", 32, 3, padding=1)
    net.batch_norm("bn2")
    net.relu("relu2")
    net.linear("fc", 10, sparse=False)
    return net.model("cnn", batch)


def _resnet_block(net: _Net, prefix: str, width: int, stride: int, bottleneck: bool) -> None:
    """Append a basic block (two 3x3) or a v1.5 bottleneck (1x1, 3x3 with the stride, 1x1).

    The add reads ``(main path, shortcut)``: the last BN of the main path, and
    ``downsample.1`` (the projection's BN) or the block's input (the identity).
    """
    block_in = net.last
    c_out = width * 4 if bottleneck else width
    if bottleneck:
        net.conv(f"{prefix}.conv1", width, 1)
        net.batch_norm(f"{prefix}.bn1")
        net.relu(f"{prefix}.relu1")
        net.conv(f"{prefix}.conv2", width, 3, stride, 1)
        net.batch_norm(f"{prefix}.bn2")
        net.relu(f"{prefix}.relu2")
        net.conv(f"{prefix}.conv3", c_out, 1)
        net.batch_norm(f"{prefix}.bn3")
    else:
        net.conv(f"{prefix}.conv1", width, 3, stride, 1)
        net.batch_norm(f"{prefix}.bn1")
        net.relu(f"{prefix}.relu1")
        net.conv(f"{prefix}.conv2", width, 3, 1, 1)
        net.batch_norm(f"{prefix}.bn2")
    main = net.last
    if stride != 1 or net.shapes[block_in][0] != c_out:
        # The projection shortcut reads the block's input, not the main path's output.
        net.conv(f"{prefix}.downsample.0", c_out, 1, stride, source=block_in)
        net.batch_norm(f"{prefix}.downsample.1")
        shortcut = net.last
    else:
        shortcut = block_in
    net.add(Add(name=f"{prefix}.add", shape=net.shapes[main], inputs=(main, shortcut)))
    net.relu(f"{prefix}.relu{3 if bottleneck else 2}")


def _resnet(name: str, batch: int, depths: tuple[int, ...], bottleneck: bool, cifar: bool) -> Model:
    if cifar:
        net = _Net((3, 32, 32))
        net.conv("conv1", 64, 3, 1, 1, sparse=False)
        net.batch_norm("bn1")
        net.relu("relu")
    else:
        net = _Net((3, 224, 224))
        net.conv("conv1", 64, 7, 2, 3, sparse=False)
        net.batch_norm("bn1")
        net.relu("relu")
        net.pool("maxpool", "max", 3, 2, 1)
    for stage, depth in enumerate(depths):
        for block in range(depth):
            stride = 2 if stage > 0 and block == 0 else 1
            _resnet_block(net, f"layer{stage + 1}.{block}", 64 << stage, stride, bottleneck)
    net.pool("avgpool", "avg", net.shape[1], 1)
    net.linear("fc", 10 if cifar else 1000, sparse=False)
    return net.model(name, batch)


def resnet18(batch: int) -> Model:
    """Return ResNet-18 on ImageNet (3x224x224, 1000 classes)."""
    return _resnet("resnet18", batch, (2, 2, 2, 2), bottleneck=False, cifar=False)


def resnet18_cifar(batch: int) -> Model:
    """Return ResNet-18 on CIFAR-10 (3x32x32, 3x3 stride-1 stem, no max pool, 10 classes)."""
    return _resnet("resnet18_cifar", batch, (2, 2, 2, 2), bottleneck=False, cifar=True)


def resnet50(batch: int) -> Model:
    """Return ResNet-50 v1.5 on ImageNet (3x224x224, 1000 classes)."""
    return _resnet("resnet50", batch, (3, 4, 6, 3), bottleneck=True, cifar=False)


def vgg16(batch: int) -> Model:
    """Return VGG-16 (configuration D) on ImageNet with its three FC layers (fc6, fc7, fc8)."""
    net = _Net((3, 224, 224))
    for stage, (width, depth) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        for i in range(depth):
            first = stage == 0 and i == 0
            net.conv(f"conv{stage + 1}_{i + 1}", width, 3, 1, 1, sparse=not first)
            net.relu(f"relu{stage + 1}_{i + 1}")
        net.pool(f"pool{stage + 1}", "max", 2, 2)
    for fc in ("fc6", "fc7"):
        net.linear(fc, 4096)
        net.relu(fc.replace("fc", "relu"))
    net.linear("fc8", 1000, sparse=False)
    return net.model("vgg16", batch)


def _encoder_layer(net: _Net, prefix: str, heads: int, mlp_dim: int, post_norm: bool) -> None:
    """Append one transformer encoder layer on ``(tokens, d)``: attention, then the MLP.

    Pre-norm (ViT): ``x + attn(LN(x))``, ``x + mlp(LN(x))``; post-norm (BERT): ``LN(x +
    attn(x))``, ``LN(x + mlp(x))``. Q, K and V are one fused linear (d -> 3d); both
    attention products read their Q, K, V operands from it. Each add reads ``(residual
    stream, branch output)``: the stream is the layer's input for ``add1``, and ``add1``
    (pre-norm) or ``norm1`` (post-norm) for ``add2``.
    """
    x = net.last
    tokens, d = net.shape
    d_head = d // heads
    if not post_norm:
        net.layer_norm(f"{prefix}.norm1")
    net.linear(f"{prefix}.attn.qkv", 3 * d)
    qkv = net.last
    net.add(
        MatMul(
            name=f"{prefix}.attn.qk",
            inputs=(qkv, qkv),  # Q and K^T: slices of the fused QKV output
            m=tokens,
            k=d_head,
            n=tokens,
            count=heads,
        )
    )
    net.add(Softmax(name=f"{prefix}.attn.softmax", shape=net.shape))
    net.add(
        MatMul(
            name=f"{prefix}.attn.av",
            inputs=(net.last, qkv),  # the attention weights times V
            m=tokens,
            k=tokens,
            n=d_head,
            count=heads,
        )
    )
    net.shape = (tokens, d)  # the heads concatenated again
    net.linear(f"{prefix}.attn.proj", d)
    net.add(Add(name=f"{prefix}.add1", shape=net.shape, inputs=(x, net.last)))
    net.layer_norm(f"{prefix}.norm{1 if post_norm else 2}")
    stream = net.last if post_norm else f"{prefix}.add1"
    net.linear(f"{prefix}.mlp.fc1", mlp_dim)
    net.add(GELU(name=f"{prefix}.mlp.act", shape=net.shape))
    net.linear(f"{prefix}.mlp.fc2", d)
    net.add(Add(name=f"{prefix}.add2", shape=net.shape, inputs=(stream, net.last)))
    if post_norm:
        net.layer_norm(f"{prefix}.norm2")


def vit_b16(batch: int, *, image_size: int = 224, classes: int = 1000) -> Model:
    """Return ViT-B/16: 16x16 patches, a class token, 12 pre-norm layers, d = 768.

    Parameters
    ----------
    batch : int
        Images per step.
    image_size : int
        Input height and width, a multiple of 16 (default 224: 196 patches + 1 = 197 tokens).
    classes : int
        Outputs of the classifier head (default 1000).
    """
    if not isinstance(image_size, int) or image_size < 16 or image_size % 16:
        raise ModelError(
            f"vit_b16: image_size must be a positive multiple of 16, got {image_size!r}"
        )
    net = _Net((3, image_size, image_size))
    _, h, w = net.conv("patch_embed", 768, 16, 16, sparse=False)
    # Class token prepended, then the position embedding added (host concat, WUVE add): the
    # add reads the patches and owns its second operand, the embedding (parameter=True).
    net.add(Add(name="pos_embed", shape=(h * w + 1, 768), parameter=True, inputs=(net.last,)))
    for i in range(12):
        _encoder_layer(net, f"blocks.{i}", 12, 3072, post_norm=False)
    net.layer_norm("norm")
    net.shape = (1, 768)  # the head reads the class token only
    net.linear("head", classes, sparse=False)
    return net.model("vit_b16", batch)


def bert_base(batch: int, *, seq_len: int = 128, classes: int = 2) -> Model:
    """Return BERT-base with a sequence-classification head on the [CLS] token.

    Parameters
    ----------
    batch : int
        Sequences per step.
    seq_len : int
        Tokens per sequence (default 128).
    classes : int
        Outputs of the classifier (default 2, as in GLUE SST-2); the pooler is left out.
    """
    net = _Net((seq_len, 768))
    net.layer_norm("embeddings.norm")
    for i in range(12):
        _encoder_layer(net, f"encoder.{i}", 12, 3072, post_norm=True)
    net.shape = (1, 768)
    net.linear("classifier", classes, sparse=False)
    return net.model("bert_base", batch)


_BUILDERS: dict[str, Callable[[int], Model]] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet18": resnet18,
    "resnet18_cifar": resnet18_cifar,
    "resnet50": resnet50,
    "vgg16": vgg16,
    "vit_b16": vit_b16,
    "bert_base": bert_base,
}


def model_names() -> tuple[str, ...]:
    """Return the zoo's model names, small to large within each family."""
    return tuple(_BUILDERS)


def get_model(name: str, batch: int) -> Model:
    """Return the zoo model ``name`` at ``batch`` samples per training step.

    Parameters
    ----------
    name : str
        One of :func:`model_names`.
    batch : int
        Samples per step, >= 1.

    Raises
    ------
    ModelError
        If the name is unknown (the message lists the allowed names) or ``batch < 1``.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ModelError(f"unknown model {name!r}; allowed: {', '.join(_BUILDERS)}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ModelError(f"batch must be an integer >= 1, got {batch!r}")
    return builder(batch)
