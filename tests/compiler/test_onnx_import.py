"""ONNX import (compiler/onnx_import.py): graphs built with onnx.helper, nothing downloaded.

A graph equal to a zoo network must import as the zoo's layers and compile to the same
instruction words; what the zoo cannot describe must fail in one line naming the file, the
node and its operator, through the CLI with exit code 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from nmsat.cli import main
from nmsat.compiler import compile_model, emit
from nmsat.compiler.onnx_import import DEFAULT_BATCH, OnnxImportError, load_onnx
from nmsat.hw.isa_asm import read_program
from nmsat.hw.params import load_params
from nmsat.models.zoo import Add, Conv2d, Linear, MatMul, Norm, Pool, get_model

Dims = Sequence[int | str | None]


def _weight(name: str, *dims: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(dims, np.float32), name)


def _ints(name: str, values: Sequence[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _save(
    path: Path,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    inp: Dims,
    out: tuple[str, Dims],
    *,
    opset: int = 17,
) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(inp))],
        [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, list(out[1]))],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, path)
    return path


def _node(op: str, inputs: list[str], output: str, name: str, **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=name, **attrs)


def _mlp(path: Path, batch: int | str = "N") -> Path:
    """The zoo's ``mlp`` as PyTorch exports it (Gemm with transB and bias), plus a softmax."""
    nodes = [
        _node("Gemm", ["x", "fc1.weight", "fc1.bias"], "a", "fc1", transB=1),
        _node("Relu", ["a"], "b", "relu1"),
        _node("Gemm", ["b", "fc2.weight", "fc2.bias"], "c", "fc2", transB=1),
        _node("Relu", ["c"], "d", "relu2"),
        _node("MatMul", ["d", "fc3.weight"], "e", "fc3"),  # x @ W, bias-less
        _node("Softmax", ["e"], "p", "softmax"),
    ]
    inits = [
        _weight("fc1.weight", 128, 64),
        _weight("fc1.bias", 128),
        _weight("fc2.weight", 64, 128),
        _weight("fc2.bias", 64),
        _weight("fc3.weight", 64, 10),
    ]
    return _save(path, nodes, inits, [batch, 64], ("p", [batch, 10]))


def _cnn(path: Path) -> Path:
    """The zoo's ``cnn``: conv-BN-ReLU, max pool, conv-BN-ReLU, flatten, linear."""

    def bn(name: str, x: str, y: str, c: int) -> onnx.NodeProto:
        ins = [f"{name}.{p}" for p in ("weight", "bias", "mean", "var")]
        return _node("BatchNormalization", [x, *ins], y, name)

    nodes = [
        _node("Conv", ["x", "conv1.w", "conv1.b"], "c1", "conv1", pads=[1, 1, 1, 1]),
        bn("bn1", "c1", "b1", 16),
        _node("Relu", ["b1"], "r1", "relu1"),
        _node("MaxPool", ["r1"], "p1", "pool", kernel_shape=[2, 2], strides=[2, 2]),
        _node("Conv", ["p1", "conv2.w"], "c2", "conv2", kernel_shape=[3, 3], pads=[1] * 4),
        bn("bn2", "c2", "b2", 32),
        _node("Relu", ["b2"], "r2", "relu2"),
        _node("Flatten", ["r2"], "f", "flatten"),
        _node("Gemm", ["f", "fc.w", "fc.b"], "y", "fc", transB=1),
    ]
    inits = [
        _weight("conv1.w", 16, 1, 3, 3),
        _weight("conv1.b", 16),
        _weight("conv2.w", 32, 16, 3, 3),
    ]
    inits += [_weight("fc.w", 10, 512), _weight("fc.b", 10)]
    for name, c in (("bn1", 16), ("bn2", 32)):
        inits += [_weight(f"{name}.{p}", c) for p in ("weight", "bias", "mean", "var")]
    return _save(path, nodes, inits, ["N", 1, 8, 8], ("y", ["N", 10]))


def _resnet(path: Path) -> Path:
    """A small ResNet: stem, an identity block, a projection block (stride 2), GAP, fc.

    Node names as ``torch.onnx.export`` writes them; a Dropout and an Identity on the way.
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def conv_bn(prefix: str, x: str, c_in: int, c_out: int, k: int, stride: int) -> str:
        inits.append(_weight(f"{prefix}.conv.w", c_out, c_in, k, k))
        nodes.append(
            _node(
                "Conv",
                [x, f"{prefix}.conv.w"],
                f"{prefix}.c",
                f"/{prefix}/conv/Conv",
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[k // 2] * 4,
            )
        )
        inits.extend(_weight(f"{prefix}.bn.{p}", c_out) for p in ("w", "b", "m", "v"))
        bn_in = [f"{prefix}.c", *(f"{prefix}.bn.{p}" for p in ("w", "b", "m", "v"))]
        nodes.append(_node("BatchNormalization", bn_in, f"{prefix}.n", f"/{prefix}/bn/BN"))
        return f"{prefix}.n"

    def relu(prefix: str, x: str) -> str:
        nodes.append(_node("Relu", [x], f"{prefix}.r", f"/{prefix}/relu/Relu"))
        return f"{prefix}.r"

    stem = relu("stem", conv_bn("stem", "x", 3, 16, 3, 1))
    main = conv_bn("l1.b", relu("l1.a", conv_bn("l1.a", stem, 16, 16, 3, 1)), 16, 16, 3, 1)
    nodes.append(_node("Add", [main, stem], "l1.sum", "/layer1/Add"))
    block1 = relu("l1", "l1.sum")
    main = conv_bn("l2.b", relu("l2.a", conv_bn("l2.a", block1, 16, 32, 3, 2)), 32, 32, 3, 1)
    short = conv_bn("l2.down", block1, 16, 32, 1, 2)
    nodes.append(_node("Add", [main, short], "l2.sum", "/layer2/Add"))
    block2 = relu("l2", "l2.sum")
    nodes += [
        _node("GlobalAveragePool", [block2], "gap", "/avgpool/GlobalAveragePool"),
        _node("Flatten", ["gap"], "flat", "/Flatten"),
        _node("Dropout", ["flat"], "drop", "/dropout/Dropout"),
        _node("Gemm", ["drop", "fc.w", "fc.b"], "logits", "/fc/Gemm", transB=1),
        _node("Identity", ["logits"], "y", "/Identity"),
    ]
    inits += [_weight("fc.w", 10, 32), _weight("fc.b", 10)]
    return _save(path, nodes, inits, ["batch_size", 3, 8, 8], ("y", ["batch_size", 10]))


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("nmsat: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


# -- zoo networks: the same layers, the same program -----------------------------------------


def test_mlp_imports_as_the_zoo_mlp_and_compiles_to_the_same_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _mlp(tmp_path / "mlp.onnx")
    assert load_onnx(path, 8).layers == get_model("mlp", 8).layers
    common = ["--config", "tiny", "--batch", "8", "--nm", "2:8"]
    assert main(["compile", "--onnx", str(path), *common, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mlp batch 8 2:8 on tiny:"), out
    assert main(["compile", "--model", "mlp", *common, "--out", str(tmp_path / "b")]) == 0
    words = read_program(tmp_path / "a.nmsb")
    assert len(words) > 100
    assert words == read_program(tmp_path / "b.nmsb")


def test_cnn_imports_as_the_zoo_cnn_and_compiles_to_the_same_words(tmp_path: Path) -> None:
    model = load_onnx(_cnn(tmp_path / "cnn.onnx"), 4)
    zoo = get_model("cnn", 4)
    assert [type(layer) for layer in model.layers] == [type(layer) for layer in zoo.layers[:-1]]
    # The zoo ends with the loss's softmax; the exported graph ends with the logits, and the
    # compiler puts the loss on the last layer either way.
    assert model.layers == zoo.layers[:-1]
    params = load_params("tiny")
    ours = emit(compile_model(model, (2, 4), params)).words
    assert ours == emit(compile_model(zoo, (2, 4), params)).words


def _resnet18(path: Path) -> Path:
    """torchvision's ResNet-18 as ``torch.onnx.export`` writes it (BN unfused), zoo names."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def conv(name: str, x: str, c_in: int, c_out: int, k: int, stride: int) -> str:
        inits.append(_weight(f"{name}.weight", c_out, c_in, k, k))
        window = {"kernel_shape": [k, k], "strides": [stride] * 2, "pads": [k // 2] * 4}
        nodes.append(_node("Conv", [x, f"{name}.weight"], name, name, **window))
        return name

    def bn(name: str, x: str, c: int) -> str:
        params = [f"{name}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
        inits.extend(_weight(p, c) for p in params)
        nodes.append(_node("BatchNormalization", [x, *params], name, name))
        return name

    def relu(name: str, x: str) -> str:
        nodes.append(_node("Relu", [x], name, name))
        return name

    x = relu("relu", bn("bn1", conv("conv1", "x", 3, 64, 7, 2), 64))
    window = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}
    nodes.append(_node("MaxPool", [x], "maxpool", "maxpool", **window))
    x, c_in = "maxpool", 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            p, stride = f"layer{stage + 1}.{block}", 2 if stage and not block else 1
            y = relu(
                f"{p}.relu1", bn(f"{p}.bn1", conv(f"{p}.conv1", x, c_in, width, 3, stride), width)
            )
            y = bn(f"{p}.bn2", conv(f"{p}.conv2", y, width, width, 3, 1), width)
            shortcut = x
            if stride != 1 or c_in != width:
                down = conv(f"{p}.downsample.0", x, c_in, width, 1, stride)
                shortcut = bn(f"{p}.downsample.1", down, width)
            nodes.append(_node("Add", [y, shortcut], f"{p}.add", f"{p}.add"))
            x, c_in = relu(f"{p}.relu2", f"{p}.add"), width
    nodes.append(_node("GlobalAveragePool", [x], "avgpool", "avgpool"))
    nodes.append(_node("Flatten", ["avgpool"], "flat", "flatten"))
    inits += [_weight("fc.weight", 1000, 512), _weight("fc.bias", 1000)]
    nodes.append(_node("Gemm", ["flat", "fc.weight", "fc.bias"], "y", "fc", transB=1))
    return _save(path, nodes, inits, ["batch", 3, 224, 224], ("y", ["batch", 1000]))


def test_an_exported_resnet18_imports_as_the_zoo_resnet18(tmp_path: Path) -> None:
    model = load_onnx(_resnet18(tmp_path / "resnet18.onnx"), 32)
    assert model.layers == get_model("resnet18", 32).layers[:-1]  # all but the loss's softmax


# -- a ResNet-like graph through the command line ----------------------------------------------


def test_resnet_like_graph_compiles_and_simulates_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _resnet(tmp_path / "tiny_resnet.onnx")
    model = load_onnx(path, 2)
    assert model.batch == 2 and model.input_shape == (3, 8, 8)
    assert model.inputs_of("/layer1/Add") == ("/l1.b/bn/BN", "/stem/relu/Relu")
    assert model.inputs_of("/layer2/Add") == ("/l2.b/bn/BN", "/l2.down/bn/BN")
    assert model.inputs_of("/l2.down/conv/Conv") == ("/l1/relu/Relu",)
    down = model.layer("/l2.down/conv/Conv")
    assert isinstance(down, Conv2d) and (down.kh, down.stride, down.padding) == (1, 2, 0)
    gap = model.layer("/avgpool/GlobalAveragePool")
    assert isinstance(gap, Pool) and gap.output_shape == (32, 1, 1)
    fc = model.layer("/fc/Gemm")
    assert isinstance(fc, Linear) and (fc.c_in, fc.c_out, fc.sparse) == (32, 10, False)
    assert model.layers[-1] is fc  # Dropout, Flatten and Identity make no layer
    assert not model.layer("/stem/conv/Conv").sparse  # type: ignore[attr-defined]
    assert model.layer("/l1.a/conv/Conv").sparse  # type: ignore[attr-defined]

    common = ["--onnx", str(path), "--config", "tiny", "--batch", "2", "--nm", "2:8"]
    assert main(["compile", *common, "--out", str(tmp_path / "prog")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny_resnet batch 2 2:8 on tiny:") and "segments" in out, out
    assert len(read_program(tmp_path / "prog.nmsb")) > 0
    record = tmp_path / "r.json"
    args = ["simulate", *common, "--mode", "perf", "--no-progress", "--json", str(record)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tiny_resnet batch 2 2:8 on tiny (perf mode" in out
    assert "cycles" in out and "host operations" in out
    assert '"model": "tiny_resnet"' in record.read_text()


# -- the batch -------------------------------------------------------------------------------


def test_batch_comes_from_a_fixed_axis_a_default_or_the_caller(tmp_path: Path) -> None:
    assert load_onnx(_mlp(tmp_path / "a.onnx", batch=16)).batch == 16
    assert load_onnx(_mlp(tmp_path / "b.onnx", batch="N")).batch == DEFAULT_BATCH
    assert load_onnx(_mlp(tmp_path / "c.onnx", batch=16), 4).batch == 4
    assert load_onnx(_mlp(tmp_path / "d.onnx", batch=None), 3).batch == 3
    with pytest.raises(OnnxImportError, match="batch must be"):
        load_onnx(tmp_path / "a.onnx", 0)


def _flatten_by_shape(path: Path, batch: int | str) -> Path:
    """``x.view(x.size(0), -1)`` as older exporters write it: Shape, Gather, Concat."""
    nodes = [
        _node("Shape", ["x"], "s", "shape"),
        _node("Gather", ["s", "zero"], "n", "gather", axis=0),
        _node("Unsqueeze", ["n", "axis0"], "n1", "unsqueeze"),
        _node("Concat", ["n1", "minus1"], "target", "concat", axis=0),
        _node("Reshape", ["x", "target"], "f", "reshape"),
        _node("Gemm", ["f", "w"], "y", "fc", transB=1),
    ]
    zero = numpy_helper.from_array(np.asarray(0, np.int64), "zero")
    inits = [zero, _ints("axis0", [0]), _ints("minus1", [-1]), _weight("w", 10, 48)]
    return _save(path, nodes, inits, [batch, 3, 4, 4], ("y", [batch, 10]))


@pytest.mark.parametrize("batch", ["N", 1, 5])
def test_a_reshape_sized_at_run_time_is_sized_by_shape_inference(
    tmp_path: Path, batch: int | str
) -> None:
    model = load_onnx(_flatten_by_shape(tmp_path / "m.onnx", batch), 2)
    assert [layer.name for layer in model.layers] == ["fc"]
    fc = model.layer("fc")
    assert isinstance(fc, Linear) and (fc.c_in, fc.tokens) == (48, 1)


@pytest.mark.parametrize(
    ("target", "ok"),
    [([-1, 48], True), ([0, 3, 16], True), ([0, -1], True), ([1, -1], False), ([48, -1], False)],
)
def test_a_constant_reshape_must_keep_the_batch_first(
    tmp_path: Path, target: list[int], ok: bool
) -> None:
    nodes = [
        _node("Reshape", ["x", "t"], "r", "reshape"),
        _node("Relu", ["r"], "y", "relu"),
    ]
    path = _save(
        tmp_path / "m.onnx",
        nodes,
        [_ints("t", target)],
        ["N", 3, 4, 4],
        ("y", [None] * len(target)),
    )
    if ok:
        assert load_onnx(path, 2).layers[0].name == "relu"
    else:
        with pytest.raises(OnnxImportError, match=r"node 'reshape' \(Reshape\)"):
            load_onnx(path, 2)


def test_external_data_is_not_read_for_weights_but_must_exist(tmp_path: Path) -> None:
    nodes = [
        _node("Reshape", ["x", "target"], "f", "reshape"),
        _node("Gemm", ["f", "w"], "y", "fc", transB=1),
    ]
    inits = [_ints("target", [-1, 48]), _weight("w", 10, 48)]
    path = _save(tmp_path / "m.onnx", nodes, inits, ["N", 3, 4, 4], ("y", ["N", 10]))
    folder = tmp_path / "exported"
    folder.mkdir()
    external = folder / "m.onnx"
    onnx.save(
        onnx.load(path), external, save_as_external_data=True, location="m.data", size_threshold=0
    )
    fc = load_onnx(external, 2).layer("fc")  # the reshape's target is read from m.data
    assert isinstance(fc, Linear) and fc.c_in == 48
    (folder / "m.data").unlink()
    with pytest.raises(OnnxImportError, match=r"m\.data"):
        load_onnx(external, 2)


# -- operators beyond the zoo networks -------------------------------------------------------


def test_matmul_on_tokens_is_a_linear_and_a_bias_add_is_dropped(tmp_path: Path) -> None:
    nodes = [
        _node("MatMul", ["x", "w"], "h", "proj"),
        _node("Add", ["h", "bias"], "hb", "proj_bias"),
        _node("Add", ["hb", "pos"], "hp", "pos_embed"),
        _node("LayerNormalization", ["hp", "ln_w"], "n", "norm"),
        _node("Add", ["n", "hp"], "r", "residual"),
        _node("Gelu", ["r"], "y", "gelu"),
    ]
    inits = [_weight("w", 32, 16), _weight("bias", 16), _weight("pos", 1, 7, 16)]
    inits.append(_weight("ln_w", 16))
    path = _save(tmp_path / "t.onnx", nodes, inits, ["N", 7, 32], ("y", ["N", 7, 16]), opset=20)
    model = load_onnx(path, 2)
    assert [layer.name for layer in model.layers] == [
        "proj",
        "pos_embed",
        "norm",
        "residual",
        "gelu",
    ]
    proj = model.layer("proj")
    assert isinstance(proj, Linear) and (proj.c_in, proj.c_out, proj.tokens) == (32, 16, 7)
    pos = model.layer("pos_embed")
    assert isinstance(pos, Add) and pos.parameter and pos.inputs == ("proj",)
    norm = model.layer("norm")
    assert isinstance(norm, Norm) and norm.kind == "layer"
    assert model.inputs_of("residual") == ("norm", "pos_embed")


def test_a_product_of_two_activations_is_a_zoo_matmul(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = [
        _node("MatMul", ["x", "wq"], "q", "q"),
        _node("Softmax", ["q"], "s", "scores"),
        _node("MatMul", ["s", "q"], "y", "attend"),
    ]
    path = _save(
        tmp_path / "att.onnx", nodes, [_weight("wq", 8, 8)], ["N", 8, 8], ("y", ["N", 8, 8])
    )
    layer = load_onnx(path, 2).layer("attend")
    assert isinstance(layer, MatMul) and (layer.m, layer.k, layer.n, layer.count) == (8, 8, 8, 1)
    assert layer.inputs == ("scores", "q")
    # The compiler lowers the zoo's attention patterns only: refused in one line.
    assert (
        main(
            [
                "compile",
                "--onnx",
                str(path),
                "--config",
                "tiny",
                "--batch",
                "2",
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 2
    )
    _one_line_error(capsys, "'attend'", "matmul")


def _inferred_sample_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    graph = onnx.shape_inference.infer_shapes(onnx.load(path)).graph
    return {
        v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim[1:])
        for v in (*graph.value_info, *graph.output)
    }


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(4, 12),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    pad=st.integers(0, 2),
    same=st.booleans(),
    pool=st.sampled_from(["MaxPool", "AveragePool"]),
    pool_kernel=st.integers(1, 3),
)
def test_window_shapes_agree_with_onnx_shape_inference(
    tmp_path_factory: pytest.TempPathFactory,
    size: int,
    kernel: int,
    stride: int,
    pad: int,
    same: bool,
    pool: str,
    pool_kernel: int,
) -> None:
    """Conv and pool records give the output shapes ONNX infers."""
    pad = min(pad, kernel // 2)
    conv_out = -(-size // stride) if same else (size + 2 * pad - kernel) // stride + 1
    assume(pool_kernel <= conv_out)
    window: dict[str, Any] = {"strides": [stride, stride]}
    window.update({"auto_pad": "SAME_UPPER"} if same else {"pads": [pad] * 4})
    counting = {"count_include_pad": 1} if pool == "AveragePool" else {}  # PyTorch's default
    nodes = [
        _node("Conv", ["x", "w"], "c", "conv", kernel_shape=[kernel, kernel], **window),
        _node(pool, ["c"], "y", "pool", kernel_shape=[pool_kernel] * 2, strides=[1, 1], **counting),
    ]
    path = tmp_path_factory.mktemp("w") / "m.onnx"
    weight = _weight("w", 4, 2, kernel, kernel)
    _save(path, nodes, [weight], ["N", 2, size, size], ("y", [None] * 4))
    total = max((conv_out - 1) * stride + kernel - size, 0)
    if same and total % 2:  # SAME padding of an odd total: unequal sides, refused
        with pytest.raises(OnnxImportError, match=r"node 'conv' \(Conv\): pads \["):
            load_onnx(path, 1)
        return
    model = load_onnx(path, 1)
    inferred = _inferred_sample_shapes(path)
    assert model.layer("conv").output_shape == inferred["c"]
    assert model.layer("pool").output_shape == inferred["y"]


# -- errors: one line, the file, the node, the operator --------------------------------------


def _lstm(path: Path) -> Path:
    nodes = [_node("LSTM", ["x", "W", "R"], "y", "lstm0", hidden_size=4)]
    inits = [_weight("W", 1, 16, 8), _weight("R", 1, 16, 4)]
    return _save(path, nodes, inits, [5, 2, 8], ("y", [None] * 4))


def _grouped(path: Path) -> Path:
    nodes = [_node("Conv", ["x", "w"], "y", "dw", group=4, pads=[1] * 4)]
    return _save(path, nodes, [_weight("w", 4, 1, 3, 3)], ["N", 4, 8, 8], ("y", ["N", 4, 8, 8]))


def _asymmetric(path: Path) -> Path:
    nodes = [_node("Conv", ["x", "w"], "y", "conv", pads=[0, 0, 1, 1])]
    return _save(path, nodes, [_weight("w", 4, 4, 2, 2)], ["N", 4, 8, 8], ("y", ["N", 4, 8, 8]))


def _broadcast(path: Path) -> Path:
    nodes = [
        _node("GlobalAveragePool", ["x"], "g", "gap"),
        _node("Add", ["x", "g"], "y", "excite"),
    ]
    return _save(path, nodes, [], ["N", 4, 8, 8], ("y", ["N", 4, 8, 8]))


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"\x08\x07garbage, not a protobuf \xff\xff\xff\xff")
    return path


def _truncated(path: Path) -> Path:
    blob = _mlp(path).read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_lstm, ["node 'lstm0' (LSTM)", "not supported", "Conv"]),
        (_grouped, ["node 'dw' (Conv)", "group 4"]),
        (_asymmetric, ["node 'conv' (Conv)", "pads [0, 0, 1, 1]"]),
        (_broadcast, ["node 'excite' (Add)", "broadcasting"]),
        (_corrupt, ["not an ONNX model"]),
        (_truncated, ["not an ONNX model"]),
        (lambda path: path, ["cannot read"]),
    ],
    ids=[
        "lstm",
        "grouped-conv",
        "asymmetric-pads",
        "broadcast-add",
        "corrupt",
        "truncated",
        "missing",
    ],
)
@pytest.mark.parametrize("command", ["compile", "simulate"])
def test_unsupported_or_broken_models_fail_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Any,
    words: list[str],
    command: str,
) -> None:
    path = make(tmp_path / "user.onnx")
    args = [command, "--onnx", str(path), "--config", "tiny", "--batch", "2"]
    if command == "compile":
        args += ["--out", str(tmp_path / "p")]
    assert main(args) == 2
    _one_line_error(capsys, str(path), *words)
    assert not (tmp_path / "p.nmsb").exists()


def test_onnx_and_model_are_mutually_exclusive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _mlp(tmp_path / "m.onnx")
    args = ["simulate", "--onnx", str(path), "--model", "mlp", "--config", "tiny"]
    assert main(args) == 2
    assert "not allowed with" in capsys.readouterr().err
    assert main(["simulate", "--config", "tiny"]) == 2
    assert "--model" in capsys.readouterr().err
