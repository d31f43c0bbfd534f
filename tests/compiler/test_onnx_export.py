"""ONNX export (compiler/onnx_export.py): zoo models written as ONNX and read back.

Every zoo model the importer can express must pass the ONNX checker and import as the zoo's
own layers (the small ones also compile to the same instruction words); the others are
refused in one line naming a layer, exit code 2, and no file is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

from nmsat.cli import main
from nmsat.compiler import compile_model, emit
from nmsat.compiler.onnx_export import OPSET, OnnxExportError, export_onnx, save_onnx
from nmsat.compiler.onnx_import import DEFAULT_BATCH, import_onnx, load_onnx
from nmsat.hw.params import load_params
from nmsat.models.zoo import (
    GELU,
    Add,
    Conv2d,
    Layer,
    Linear,
    MatMul,
    Model,
    Norm,
    Pool,
    ReLU,
    Softmax,
    get_model,
    model_names,
)

REFUSED = {"vit_b16": "'pos_embed' (add)", "bert_base": "'encoder.0.attn.qk' (matmul)"}
"""Zoo models the importer cannot express (class token, attention operands sliced from QKV)."""

SUPPORTED = [name for name in model_names() if name not in REFUSED]
SLOW = {"vgg16"}  # 138 M weights: about 10 s to draw, check and import


def _round_trip(model: Model, batch: int | None = None) -> Model:
    """Export in memory, pass the full ONNX checker, import at the model's batch."""
    proto = export_onnx(model, batch, check=False)
    onnx.checker.check_model(proto, full_check=True)
    return import_onnx(proto, model.batch, name=model.name)


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("nmsat: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    return err


def test_the_refused_and_supported_lists_cover_the_zoo() -> None:
    assert set(REFUSED) <= set(model_names())
    assert {"mlp", "cnn", "resnet18", "resnet18_cifar", "resnet50", "vgg16"} <= set(SUPPORTED)


# -- zoo models: the same layers, the same program -------------------------------------------


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in SUPPORTED],
)
def test_every_supported_zoo_model_imports_back_as_itself(name: str) -> None:
    zoo = get_model(name, 2)
    back = _round_trip(zoo)
    # The export ends with the loss's softmax, so even the last layer matches, and the
    # importer's N:M policy (dense stem and classifier) is the zoo's: full equality.
    assert back.layers == zoo.layers
    assert back.input_shape == zoo.input_shape and back.batch == 2


@pytest.mark.parametrize(("name", "batch", "nm"), [("mlp", 8, (2, 8)), ("cnn", 4, (2, 4))])
def test_small_models_compile_to_the_same_words_after_a_round_trip(
    name: str, batch: int, nm: tuple[int, int]
) -> None:
    zoo = get_model(name, batch)
    back = _round_trip(zoo, batch)
    params = load_params("tiny")
    words = emit(compile_model(back, nm, params)).words
    assert len(words) > 50
    assert words == emit(compile_model(zoo, nm, params)).words


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_the_exported_graph_runs_and_ends_with_a_softmax(name: str) -> None:
    """The weights are random but sized for a finite forward pass (He-normal)."""
    proto = export_onnx(get_model(name, 1), 3)
    shape = (3, *(get_model(name, 1).input_shape or ()))
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    outputs: Any = ReferenceEvaluator(proto).run(None, {"input": x})
    y = np.asarray(outputs[0])
    assert y.shape == (3, 10) and np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    assert len(np.unique(y.round(4))) > 3  # not a constant output: the weights are drawn


def test_initializers_are_fp32_of_the_layers_shapes_and_bn_has_four() -> None:
    proto = export_onnx(get_model("cnn", 1))
    inits = {t.name: t for t in proto.graph.initializer}
    assert {t.data_type for t in inits.values() if len(t.dims) != 1 or t.dims[0] > 4} == {
        onnx.TensorProto.FLOAT
    }
    assert list(inits["conv2.weight"].dims) == [32, 16, 3, 3]
    assert list(inits["fc.weight"].dims) == [10, 512]  # Gemm transB = 1, as PyTorch writes
    norms = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    assert [n.name for n in norms] == ["bn1", "bn2"]
    for node, channels in zip(norms, (16, 32), strict=True):
        assert len(node.input) == 5
        assert all(list(inits[p].dims) == [channels] for p in node.input[1:])
    assert [o.version for o in proto.opset_import] == [OPSET]
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Flatten") == 1 and ops[-1] == "Softmax"


def test_the_same_seed_gives_the_same_bytes() -> None:
    model = get_model("mlp", 1)
    blob = export_onnx(model, seed=7).SerializeToString()
    assert blob == export_onnx(model, seed=7).SerializeToString()
    other = export_onnx(model, seed=8)
    assert other.SerializeToString() != blob
    assert import_onnx(other, 1).layers == model.layers


def test_the_batch_axis_is_symbolic_unless_fixed() -> None:
    model = get_model("mlp", 5)
    dims = export_onnx(model).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [64]
    assert import_onnx(export_onnx(model)).batch == DEFAULT_BATCH
    fixed = export_onnx(model, 6)
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 6
    assert import_onnx(fixed).batch == 6
    with pytest.raises(OnnxExportError, match="batch must be"):
        export_onnx(model, 0)


# -- models the importer cannot express ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_models_with_attention_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    target = tmp_path / f"{name}.onnx"
    assert main(["zoo", name, "--onnx", str(target)]) == 2
    err = _one_line_error(capsys, f"model '{name}'", f"layer {REFUSED[name]}", "(matmul)")
    assert "Slice" in err
    assert not target.exists() and not list(tmp_path.iterdir())


def _model(name: str, layers: list[Layer], input_shape: tuple[int, ...]) -> Model:
    return Model(name, 2, tuple(layers), input_shape)


def test_a_layer_that_reads_another_layout_is_refused() -> None:
    # A ReLU given the classifier's features as (10,), while the linear stores (1, 10).
    layers: list[Layer] = [
        Linear(name="fc", c_in=8, c_out=10, sparse=False),
        ReLU(name="act", shape=(10,)),
    ]
    with pytest.raises(OnnxExportError, match=r"layer 'act' \(relu\) has shape 10, not the"):
        export_onnx(_model("m", layers, (8,)))
    softmax: list[Layer] = [
        Linear(name="fc", c_in=8, c_out=10, sparse=False),
        Softmax(name="p", shape=(10,)),
    ]
    with pytest.raises(OnnxExportError, match=r"'p' \(softmax\) .* layout 1x10"):
        export_onnx(_model("m", softmax, (8,)))


# -- beyond the zoo: tokens, attention-shaped products, parameters ---------------------------


def test_token_layers_products_and_parameters_round_trip() -> None:
    d = 8
    layers: list[Layer] = [
        Norm(name="ln", kind="layer", shape=(4, d)),
        Linear(name="q", c_in=d, c_out=16, tokens=4),
        Linear(name="k", inputs=("ln",), c_in=d, c_out=16, tokens=4),
        # Two heads: the products read q and k whole, under other shapes (Reshape).
        MatMul(name="qk", inputs=("q", "k"), m=4, k=8, n=4, count=2),
        Softmax(name="attn", shape=(2, 4, 4)),
        Add(name="bias", shape=(2, 4, 4), parameter=True),
        GELU(name="act", shape=(2, 4, 4)),
        Linear(name="head", c_in=32, c_out=3, sparse=False),
    ]
    model = _model("tokens", layers, (4, d))
    back = _round_trip(model)
    assert back.layers == model.layers
    proto = export_onnx(model)
    assert [o.version for o in proto.opset_import] == [20]  # Gelu
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Reshape") == 2 and "LayerNormalization" in ops


def test_n_m_flags_the_importer_sets_otherwise_are_reported(tmp_path: Path) -> None:
    model = get_model("mlp", 1)
    layers = [
        Linear(name=lay.name, inputs=lay.inputs, c_in=lay.c_in, c_out=lay.c_out, sparse=False)
        if lay.name == "fc2" and isinstance(lay, Linear)
        else lay
        for lay in model.layers
    ]
    done = save_onnx(_model("mlp_dense_fc2", layers, (64,)), tmp_path / "m.onnx")
    assert done.policy_layers == ("fc2",)
    assert "N:M eligibility not kept for fc2" in done.summary()


def test_a_graph_that_reads_back_otherwise_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last guard: the exporter imports its graph and compares (an importer change)."""
    import nmsat.compiler.onnx_export as exporter

    def drifted(proto: Any, batch: int | None = None, **names: str) -> Model:
        back = import_onnx(proto, batch, **names)
        relu = ReLU(name="relu1", inputs=("fc1",), shape=(1, 129))
        return Model(back.name, back.batch, (back.layers[0], relu, *back.layers[2:]), (64,))

    monkeypatch.setattr(exporter, "import_onnx", drifted)
    with pytest.raises(OnnxExportError, match=r"layer 'relu1' \(relu\) reads back as ReLU"):
        save_onnx(get_model("mlp", 1), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_weights_beyond_what_a_protobuf_holds_are_refused_before_drawing() -> None:
    layers: list[Layer] = [Linear(name="huge", c_in=32768, c_out=32768, sparse=False)]
    with pytest.raises(OnnxExportError, match=r"4\.0 GiB of FP32 weights"):
        export_onnx(_model("huge", layers, (32768,)))


@st.composite
def _cnns(draw: st.DrawFn) -> Model:
    """Small conv nets: conv (BN) (ReLU) (residual add) (pool) blocks, a linear, a softmax."""
    c, h = draw(st.integers(1, 4)), draw(st.integers(4, 9))
    shape: tuple[int, ...] = (c, h, h)
    layers: list[Layer] = []
    for i in range(draw(st.integers(1, 3))):
        block_in = layers[-1].name if layers else "input"
        kernel = draw(st.integers(1, min(3, shape[1])))
        keep = draw(st.booleans()) and kernel % 2 == 1
        stride = 1 if keep else draw(st.integers(1, 2))
        conv = Conv2d(
            name=f"conv{i}",
            c_in=shape[0],
            c_out=shape[0] if keep else draw(st.integers(1, 8)),
            kh=kernel,
            kw=kernel,
            stride=stride,
            padding=kernel // 2 if keep else draw(st.integers(0, kernel // 2)),
            h_in=shape[1],
            w_in=shape[2],
            sparse=not (i == 0 and shape[0] in (1, 3)),
        )
        layers.append(conv)
        shape = conv.output_shape
        if draw(st.booleans()):
            layers.append(Norm(name=f"bn{i}", kind="batch", shape=shape))
        if keep and draw(st.booleans()):
            layers.append(Add(name=f"add{i}", shape=shape, inputs=(layers[-1].name, block_in)))
        if draw(st.booleans()):
            layers.append(ReLU(name=f"relu{i}", shape=shape))
        if draw(st.booleans()):
            kernel = draw(st.integers(1, min(3, shape[1])))
            kind: Literal["max", "avg"] = draw(st.sampled_from(["max", "avg"]))
            padding = draw(st.integers(0, kernel // 2))
            pool = Pool(
                name=f"pool{i}",
                kind=kind,
                c=shape[0],
                h_in=shape[1],
                w_in=shape[2],
                kernel=kernel,
                stride=draw(st.integers(1, 2)),
                padding=padding,
            )
            layers.append(pool)
            shape = pool.output_shape
    layers.append(Linear(name="fc", c_in=int(np.prod(shape)), c_out=5, sparse=False))
    layers.append(Softmax(name="softmax", shape=(1, 5)))
    return Model("random_cnn", 2, tuple(layers), (c, h, h))


@settings(max_examples=30, deadline=None)
@given(model=_cnns())
def test_random_conv_nets_import_back_as_themselves(model: Model) -> None:
    assert _round_trip(model).layers == model.layers


# -- the command line ------------------------------------------------------------------------


def test_the_cli_writes_the_file_and_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out" / "cnn.onnx"
    assert main(["zoo", "cnn", "--onnx", str(target)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(f"cnn: wrote {target} ("), out
    assert "kB, opset 17, 10 nodes" in out and "batch N (symbolic)" in out, out
    assert load_onnx(target).layers == get_model("cnn", DEFAULT_BATCH).layers
    assert [p.name for p in target.parent.iterdir()] == ["cnn.onnx"]  # no temporary left

    assert main(["zoo", "mlp", "--batch", "6", "--onnx", str(target)]) == 0  # replaced
    assert "batch 6)" in capsys.readouterr().out
    model = load_onnx(target)
    assert model.name == "cnn" and model.batch == 6  # the file's name, the graph's batch
    assert model.layers == get_model("mlp", 6).layers


def test_the_cli_refuses_onnx_without_a_model_or_an_unwritable_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["zoo", "--onnx", str(tmp_path / "x.onnx")]) == 2
    _one_line_error(capsys, "--onnx needs a model", "resnet18")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["zoo", "mlp", "--onnx", str(blocker / "m.onnx")]) == 2
    _one_line_error(capsys, "cannot write", str(blocker / "m.onnx"))


def test_the_zoo_listing_and_summary_are_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo"]) == 0
    assert capsys.readouterr().out.split() == list(model_names())
    assert main(["zoo", "mlp"]) == 0
    assert capsys.readouterr().out.startswith("model mlp: batch 1,")
