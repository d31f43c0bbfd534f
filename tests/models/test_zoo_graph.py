"""The model zoo's data-flow graph: each layer's inputs, as built, resolved, loaded and checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from nmsat.hw.errors import NmsatError, ShapeError
from nmsat.models.zoo import (
    Add,
    Conv2d,
    Layer,
    Linear,
    MatMul,
    Model,
    ModelError,
    Norm,
    ReLU,
    Softmax,
    get_model,
    load_model_yaml,
    model_names,
)

ZOO_DIR = Path(__file__).resolve().parents[2] / "models" / "zoo"


def _previous(model: Model, name: str) -> str:
    """The name of the layer before ``name`` ("input" for the first)."""
    names = ["input", *(layer.name for layer in model.layers)]
    return names[names.index(name) - 1]


# -- every zoo model ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", model_names())
def test_every_layer_reads_earlier_tensors_of_its_arity(name: str) -> None:
    model = get_model(name, 2)
    earlier = {"input"}
    for layer in model.layers:
        assert layer.inputs, layer.name  # resolved: never the () default
        assert len(layer.inputs) == layer.arity, layer.name
        assert set(layer.inputs) <= earlier, layer.name
        assert model.inputs_of(layer.name) == layer.inputs
        earlier.add(layer.name)
    assert model.graph == {layer.name: layer.inputs for layer in model.layers}
    assert list(model.graph) == [layer.name for layer in model.layers]
    assert model.layers[0].inputs == ("input",)


@pytest.mark.parametrize("name", ["mlp", "cnn", "vgg16"])
def test_chains_read_the_previous_layer(name: str) -> None:
    model = get_model(name, 1)
    for layer in model.layers:
        assert model.inputs_of(layer.name) == (_previous(model, layer.name),)


def test_graph_survives_batch_changes() -> None:
    model = get_model("resnet18", 1)
    assert model.with_batch(64).graph == model.graph


# -- ResNets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bottleneck", "downsamples"),
    [("resnet18", False, 3), ("resnet18_cifar", False, 3), ("resnet50", True, 4)],
)
def test_resnet_adds_read_main_path_and_shortcut(
    name: str, bottleneck: bool, downsamples: int
) -> None:
    model = get_model(name, 1)
    adds = [layer for layer in model.layers if isinstance(layer, Add)]
    assert len(adds) == (16 if bottleneck else 8)
    projected = 0
    for add in adds:
        prefix = add.name.removesuffix(".add")
        block_in = _previous(model, f"{prefix}.conv1")
        main = f"{prefix}.bn3" if bottleneck else f"{prefix}.bn2"
        names = {layer.name for layer in model.layers}
        if f"{prefix}.downsample.0" in names:
            projected += 1
            assert model.inputs_of(f"{prefix}.downsample.0") == (block_in,)
            assert model.inputs_of(f"{prefix}.downsample.1") == (f"{prefix}.downsample.0",)
            assert add.inputs == (main, f"{prefix}.downsample.1")
        else:
            assert add.inputs == (main, block_in)  # identity shortcut
        assert not add.parameter
        # The block input feeds conv1 (main path) and the shortcut.
        assert model.inputs_of(f"{prefix}.conv1") == (block_in,)
        relu = model.layers[[layer.name for layer in model.layers].index(add.name) + 1]
        assert relu.inputs == (add.name,)
    assert projected == downsamples


@pytest.mark.parametrize(
    ("name", "layer", "inputs"),
    [
        ("resnet50", "layer1.0.downsample.0", ("maxpool",)),
        ("resnet50", "layer1.0.add", ("layer1.0.bn3", "layer1.0.downsample.1")),
        ("resnet50", "layer1.1.add", ("layer1.1.bn3", "layer1.0.relu3")),
        ("resnet50", "layer2.0.downsample.0", ("layer1.2.relu3",)),
        ("resnet50", "layer4.2.add", ("layer4.2.bn3", "layer4.1.relu3")),
        ("resnet50", "layer1.0.conv1", ("maxpool",)),
        ("resnet50", "layer1.0.conv2", ("layer1.0.relu1",)),
        ("resnet18", "layer1.0.add", ("layer1.0.bn2", "maxpool")),
        ("resnet18", "layer2.0.downsample.0", ("layer1.1.relu2",)),
        ("resnet18", "layer2.0.add", ("layer2.0.bn2", "layer2.0.downsample.1")),
        ("resnet18", "avgpool", ("layer4.1.relu2",)),
        ("resnet18_cifar", "layer1.0.add", ("layer1.0.bn2", "relu")),
    ],
)
def test_known_resnet_edges(name: str, layer: str, inputs: tuple[str, ...]) -> None:
    assert get_model(name, 1).inputs_of(layer) == inputs


# -- transformers -------------------------------------------------------------------------------


def test_vit_graph() -> None:
    model = get_model("vit_b16", 1)
    pos = model.layer("pos_embed")
    assert isinstance(pos, Add)
    assert (pos.parameter, pos.arity, pos.inputs) == (True, 1, ("patch_embed",))
    for i in range(12):
        p = f"blocks.{i}"
        x = "pos_embed" if i == 0 else f"blocks.{i - 1}.add2"
        assert model.inputs_of(f"{p}.norm1") == (x,)
        assert model.inputs_of(f"{p}.attn.qkv") == (f"{p}.norm1",)
        assert model.inputs_of(f"{p}.attn.qk") == (f"{p}.attn.qkv", f"{p}.attn.qkv")
        assert model.inputs_of(f"{p}.attn.softmax") == (f"{p}.attn.qk",)
        assert model.inputs_of(f"{p}.attn.av") == (f"{p}.attn.softmax", f"{p}.attn.qkv")
        assert model.inputs_of(f"{p}.attn.proj") == (f"{p}.attn.av",)
        assert model.inputs_of(f"{p}.add1") == (x, f"{p}.attn.proj")
        assert model.inputs_of(f"{p}.norm2") == (f"{p}.add1",)
        assert model.inputs_of(f"{p}.add2") == (f"{p}.add1", f"{p}.mlp.fc2")
    assert model.inputs_of("norm") == ("blocks.11.add2",)
    assert model.inputs_of("head") == ("norm",)  # the class token, selected on the host


def test_bert_graph() -> None:
    model = get_model("bert_base", 1)
    assert model.inputs_of("embeddings.norm") == ("input",)
    for i in range(12):
        p = f"encoder.{i}"
        x = "embeddings.norm" if i == 0 else f"encoder.{i - 1}.norm2"
        assert model.inputs_of(f"{p}.attn.qkv") == (x,)
        assert model.inputs_of(f"{p}.attn.qk") == (f"{p}.attn.qkv", f"{p}.attn.qkv")
        assert model.inputs_of(f"{p}.attn.av") == (f"{p}.attn.softmax", f"{p}.attn.qkv")
        assert model.inputs_of(f"{p}.add1") == (x, f"{p}.attn.proj")
        assert model.inputs_of(f"{p}.norm1") == (f"{p}.add1",)
        assert model.inputs_of(f"{p}.mlp.fc1") == (f"{p}.norm1",)
        assert model.inputs_of(f"{p}.add2") == (f"{p}.norm1", f"{p}.mlp.fc2")
        assert model.inputs_of(f"{p}.norm2") == (f"{p}.add2",)
    assert model.inputs_of("classifier") == ("encoder.11.norm2",)


@pytest.mark.parametrize("name", ["vit_b16", "bert_base"])
def test_transformer_adds_and_matmuls_are_all_explicit(name: str) -> None:
    model = get_model(name, 1)
    residual = [x for x in model.layers if isinstance(x, Add) and not x.parameter]
    matmuls = [x for x in model.layers if isinstance(x, MatMul)]
    assert (len(residual), len(matmuls)) == (24, 24)
    for layer in residual:
        assert layer.inputs[1].endswith(("attn.proj", "mlp.fc2"))
        assert all(model.layer(ref).output_shape == layer.shape for ref in layer.inputs)


# -- resolution and validation ------------------------------------------------------------------


def _fc(name: str, c_in: int = 4, c_out: int = 4, **kw: Any) -> Linear:
    return Linear(name=name, c_in=c_in, c_out=c_out, **kw)


def test_model_resolves_the_default_to_the_previous_layer() -> None:
    implicit = Model("m", 1, [_fc("a"), ReLU(name="r", shape=(1, 4)), _fc("b")], (4,))
    assert implicit.graph == {"a": ("input",), "r": ("a",), "b": ("r",)}
    explicit = Model(
        "m",
        1,
        [
            _fc("a", inputs=("input",)),
            ReLU(name="r", shape=(1, 4), inputs=["a"]),
            _fc("b", inputs=("r",)),
        ],
        (4,),
    )
    assert explicit == implicit
    assert explicit.layers[1].inputs == ("a",)  # a list is stored as a tuple


def test_residual_model_and_unknown_input_shape() -> None:
    layers = [
        _fc("a"),
        _fc("b"),
        Add(name="s", shape=(1, 4), inputs=("b", "a")),
        Add(name="t", shape=(1, 4), inputs=("s", "input")),
    ]
    assert Model("m", 1, layers).inputs_of("t") == ("s", "input")  # input shape unknown
    with pytest.raises(ModelError, match=r"input 'input' has shape 8, not the add's 1x4"):
        Model("m", 1, layers, (8,))
    with pytest.raises(ModelError, match="no layer named 'z'"):
        Model("m", 1, layers).inputs_of("z")


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ([_fc("a", inputs=("nope",))], r"layer 'a' \(linear\): input 'nope' is not a layer"),
        ([_fc("a", inputs=("b",)), _fc("b")], r"layer 'a' \(linear\): input 'b' is a later layer"),
        ([_fc("a", inputs=("a",))], r"layer 'a' \(linear\): input 'a' is the layer itself"),
        (
            [_fc("a"), Add(name="s", shape=(1, 4))],
            r"layer 's' \(add\): has 1 input\(s\) \['a'\] \(the previous layer, by default\), "
            r"needs 2",
        ),
        (
            [_fc("a"), Add(name="s", shape=(1, 4), inputs=("a", "a", "a"))],
            r"layer 's' \(add\): has 3 input\(s\)",
        ),
        ([_fc("a"), _fc("b", inputs=("a", "input"))], r"layer 'b' \(linear\): has 2 input"),
        (
            [_fc("a"), MatMul(name="mm", m=1, k=2, n=2, inputs=("a",))],
            r"layer 'mm' \(matmul\): has 1 input\(s\) \['a'\], needs 2",
        ),
        (
            [_fc("a"), Add(name="p", shape=(1, 4), parameter=True, inputs=("a", "a"))],
            r"layer 'p' \(add\): has 2 input\(s\) \['a', 'a'\], needs 1",
        ),
        (
            [_fc("a"), _fc("b", c_out=8), Add(name="s", shape=(1, 4), inputs=("a", "b"))],
            r"layer 's' \(add\): input 'b' has shape 1x8, not the add's 1x4",
        ),
        (
            [_fc("a"), MatMul(name="mm", m=2, k=4, n=1, inputs=("a", "a"))],
            r"layer 'mm' \(matmul\): operand A 'a' has 4 elements, fewer than the 8",
        ),
        (
            [_fc("a", c_out=8), MatMul(name="mm", m=2, k=2, n=5, inputs=("a", "a"))],
            r"operand B 'a' has 8 elements, fewer than the 10",
        ),
        ([_fc("input")], "the name 'input' is reserved"),
    ],
)
def test_bad_graphs_raise_model_error(layers: list[Layer], match: str) -> None:
    with pytest.raises(ModelError, match=match) as info:
        Model("m", 1, layers, (4,))
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("model 'm': ")


def test_parameter_add_reads_one_tensor_of_any_shape() -> None:
    # ViT: the patches (768 x 14 x 14) become 197 x 768 on the host (class token prepended).
    conv = Conv2d(name="c", c_in=3, c_out=8, kh=2, kw=2, stride=2, h_in=4, w_in=4)
    pos = Add(name="pos", shape=(5, 8), parameter=True)
    model = Model("m", 1, [conv, pos], (3, 4, 4))
    assert model.inputs_of("pos") == ("c",)
    assert pos.arity == 1
    assert Add(name="s", shape=(1,)).arity == 2
    assert Softmax(name="s", shape=(1,)).arity == 1


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: _fc("a", inputs="b"), "inputs must be a tuple"),
        (lambda: _fc("a", inputs=("",)), "inputs must be a tuple"),
        (lambda: Norm(name="n", kind="layer", shape=(2,), inputs=(3,)), "inputs must be"),
        (lambda: Add(name="s", shape=(2,), parameter=1), "parameter must be true or false"),
    ],
)
def test_bad_inputs_fields_raise_shape_error(build: Any, match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        build()


# -- YAML -------------------------------------------------------------------------------------


def test_example_resnet_block_graph() -> None:
    model = load_model_yaml(ZOO_DIR / "example_resnet_block.yaml", 2)
    assert model.inputs_of("conv1") == ("input",)
    assert model.inputs_of("block.conv1") == ("relu",)
    assert model.inputs_of("block.downsample") == ("relu",)
    assert model.inputs_of("block.downsample_bn") == ("block.downsample",)
    assert model.inputs_of("block.add") == ("block.bn2", "block.downsample_bn")
    assert model.inputs_of("block.relu2") == ("block.add",)


def test_example_mlp_graph_is_a_chain() -> None:
    model = load_model_yaml(ZOO_DIR / "example_mlp.yaml", 1)
    assert model.graph == get_model("mlp", 1).graph


def _load(tmp_path: Path, text: str) -> Model:
    path = tmp_path / "net.yaml"
    path.write_text(text, encoding="utf-8")
    return load_model_yaml(path, 1)


def test_yaml_attention_block(tmp_path: Path) -> None:
    text = """\
input: [4, 8]
layers:
  - {op: linear, name: qkv, c_out: 24}
  - {op: matmul, name: qk, m: 4, k: 4, n: 4, count: 2, inputs: [qkv, qkv]}
  - {op: softmax, name: sm}
  - {op: matmul, name: av, m: 4, k: 4, n: 4, count: 2, inputs: [sm, qkv]}
  - {op: linear, name: proj, tokens: 4, c_out: 8}
  - {op: add, name: add1, inputs: [input, proj]}
  - {op: add, name: pos, parameter: true, input: null, shape: [5, 8]}
"""
    model = _load(tmp_path, text)
    assert model.inputs_of("qk") == ("qkv", "qkv")
    assert model.inputs_of("av") == ("sm", "qkv")
    assert model.inputs_of("proj") == ("av",)
    add1 = model.layer("add1")
    assert isinstance(add1, Add)
    assert (add1.inputs, add1.shape) == (("input", "proj"), (4, 8))  # shape from the operands
    pos = model.layer("pos")
    assert isinstance(pos, Add)
    assert (pos.parameter, pos.inputs) == (True, ("add1",))


BASE = "input: [4, 8]\nlayers:\n  - {op: linear, name: a, c_out: 8}\n"


@pytest.mark.parametrize(
    ("text", "key", "rule"),
    [
        (BASE + "  - {op: add}", "inputs", "missing: an add reads two tensors"),
        (BASE + "  - {op: add, input: a}", "input", "an add reads two tensors"),
        (BASE + "  - {op: add, inputs: [a]}", "inputs", "must be a list of two"),
        (BASE + "  - {op: add, inputs: a}", "inputs", "must be a list of two"),
        (BASE + "  - {op: add, inputs: [a, zz]}", "inputs", "'zz' is not 'input' or the name"),
        (BASE + "  - {op: add, name: s, inputs: [a, s]}", "inputs", "'s' is not 'input'"),
        (
            BASE + "  - {op: linear, name: b, c_out: 4}\n  - {op: add, inputs: [a, b]}",
            "inputs",
            "'b' has shape [4, 4], not the add's [4, 8]",
        ),
        (BASE + "  - {op: add, shape: [32], inputs: [a, a]}", "inputs", "not the add's [32]"),
        (BASE + "  - {op: add, parameter: 1, input: a}", "parameter", "true or false"),
        (BASE + "  - {op: add, parameter: true, inputs: [a, a]}", "inputs", "only an add or"),
        (BASE + "  - {op: matmul, m: 4, k: 2, n: 4}", "inputs", "missing"),
        (BASE + "  - {op: matmul, m: 4, k: 4, n: 4, count: 3, inputs: [a, a]}", "operand A", "48"),
        (BASE + "  - {op: relu, inputs: [a, a]}", "inputs", "unknown key"),
    ],
)
def test_yaml_graph_errors(tmp_path: Path, text: str, key: str, rule: str) -> None:
    with pytest.raises(NmsatError) as info:
        _load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "net.yaml"))
    assert re.search(r": layer \d \(\w+\): ", message)
    assert key in message
    assert rule in message


def test_yaml_input_null_reads_the_previous_layer(tmp_path: Path) -> None:
    # A tensor made on the host (here: a concatenation) from the previous layer's output.
    doc = {
        "input": [4, 8],
        "layers": [
            {"op": "linear", "name": "a", "c_out": 8},
            {"op": "linear", "name": "b", "input": None, "c_in": 8, "tokens": 5, "c_out": 2},
        ],
    }
    model = _load(tmp_path, yaml.safe_dump(doc))
    assert model.inputs_of("b") == ("a",)
