"""The model zoo: the layers of one training step of the networks nmsat studies, with shapes.

A :class:`Model` is a named list of layer records at one batch size. Each record describes one
operation per sample (output shape, forward MACs, weights); the weight layers
(:class:`Conv2d`, :class:`Linear`) also give their GEMM view at a batch, ``W[C_out, K]`` times
``X[K, P]`` with ``K = C_in * kh * kw`` and ``P = batch * output positions``, which is what the
compiler lowers to the three BDWP passes:

- FF ``Y = prune(W along C_in) X`` and BP ``dX = prune(W along C_out)^T dY``, N:M when
  :meth:`WeightLayer.sparse_passes` says so;
- WU ``dW = dY X^T``, always dense.

Attention products are :class:`MatMul` (two activations, always dense). The weightless
operations a step also runs are :class:`ReLU`, :class:`GELU`, :class:`Add`, :class:`Norm`,
:class:`Softmax` (all :class:`ElementwiseLayer`) and :class:`Pool`.

The list is the forward order; each layer's ``inputs`` names the tensors it reads (earlier
layers, or ``"input"``), which makes the model a data-flow graph: :meth:`Model.inputs_of` and
:attr:`Model.graph` give the resolved edges (``()`` on a record means the previous layer).

Models come from :func:`get_model` (names in :func:`model_names`; builders with options such
as :func:`bert_base` ``seq_len``) or from a user's YAML file (:func:`load_model_yaml`). Every
user error raises :class:`ModelError`, a :class:`~nmsat.hw.errors.NmsatError`. docs/zoo.md
lists the layers, the sparsity policy, the YAML schema and the published figures each model
is tested against.

Example
-------
>>> from nmsat.models.zoo import get_model
>>> model = get_model("resnet50", batch=32)
>>> model.layer("layer1.0.conv2").gemm(32)
(64, 576, 100352)

Ref: K. He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
Ref: K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
     Recognition", ICLR 2015.
Ref: A. Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021.
Ref: J. Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
     Understanding", NAACL 2019.
Ref: PAPER.md (BDWP math table); DESIGN.md section 4 (BDWP passes per layer).
"""

from ._builders import (
    bert_base,
    cnn,
    get_model,
    mlp,
    model_names,
    resnet18,
    resnet18_cifar,
    resnet50,
    vgg16,
    vit_b16,
)
from ._layers import Conv2d, Layer, Linear, MatMul, Sparsity, WeightLayer
from ._model import Model, ModelError
from ._ops import GELU, Add, ElementwiseLayer, Norm, Pool, ReLU, Softmax
from ._yaml import load_model_yaml

__all__ = [
    "GELU",
    "Add",
    "Conv2d",
    "ElementwiseLayer",
    "Layer",
    "Linear",
    "MatMul",
    "Model",
    "ModelError",
    "Norm",
    "Pool",
    "ReLU",
    "Softmax",
    "Sparsity",
    "WeightLayer",
    "bert_base",
    "cnn",
    "get_model",
    "load_model_yaml",
    "mlp",
    "model_names",
    "resnet18",
    "resnet18_cifar",
    "resnet50",
    "vgg16",
    "vit_b16",
]
