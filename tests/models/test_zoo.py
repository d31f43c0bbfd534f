"""The model zoo: published MACs and weights, dense layers, GEMM views, YAML layer files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from nmsat.hw.errors import NmsatError, ShapeError
from nmsat.models.zoo import (
    Add,
    Conv2d,
    ElementwiseLayer,
    Linear,
    MatMul,
    Model,
    ModelError,
    Pool,
    ReLU,
    WeightLayer,
    bert_base,
    get_model,
    load_model_yaml,
    model_names,
    vit_b16,
)

ZOO_DIR = Path(__file__).resolve().parents[2] / "models" / "zoo"

# Published forward MACs per image (convs + linears, + attention products for ViT) and
# weight counts (GEMM weights: no biases, no BN/LN, no embeddings), with the tolerance.
PUBLISHED_MACS = {
    "resnet18": (1.82e9, 0.02),  # He et al. 2016, Table 1: 1.8 GFLOPs (multiply-adds)
    "resnet50": (4.09e9, 0.02),  # 3.8 G in He et al. (v1); torchvision v1.5: 4.09 G
    "vgg16": (15.47e9, 0.02),  # Simonyan & Zisserman 2015, configuration D
    "vit_b16": (17.56e9, 0.03),  # Dosovitskiy et al. 2021 (timm: 17.56 GMACs)
    "resnet18_cifar": (0.556e9, 0.02),  # the usual 0.56 G of CIFAR ResNet-18
}
PUBLISHED_WEIGHTS = {
    "resnet18": (11.69e6, 0.01),  # 11,689,512 parameters incl. 9,600 BN and 1,000 bias
    "resnet50": (25.5e6, 0.02),  # 25,557,032 incl. 53,120 BN and 1,000 bias
    "vgg16": (138.0e6, 0.01),  # 138,357,544 incl. 13,416 biases
    "vit_b16": (86.0e6, 0.01),  # 86.6 M incl. biases, LN, class token, position embedding
    "bert_base": (85.0e6, 0.01),  # 12 layers x 7.08 M; 110 M with embeddings and pooler
    "resnet18_cifar": (11.17e6, 0.01),
}


def _close(value: float, target: float, tolerance: float) -> bool:
    return abs(value - target) <= tolerance * target


# -- published figures -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "target"), PUBLISHED_MACS.items())
def test_forward_macs_match_published(name: str, target: tuple[float, float]) -> None:
    macs = get_model(name, 1).macs_per_sample
    assert _close(macs, *target), f"{name}: {macs / 1e9:.3f} G"


@pytest.mark.parametrize(("name", "target"), PUBLISHED_WEIGHTS.items())
def test_weight_counts_match_published(name: str, target: tuple[float, float]) -> None:
    weights = get_model(name, 1).weight_count
    assert _close(weights, *target), f"{name}: {weights / 1e6:.3f} M"


def test_bert_encoder_counts_exactly() -> None:
    model = get_model("bert_base", 1)
    t, d, f = 128, 768, 3072
    layer = t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * f
    assert model.macs_per_sample == 12 * layer + d * 2
    encoder = [layer for layer in model.weight_layers if layer.name.startswith("encoder.")]
    assert sum(layer.weight_count for layer in encoder) == 12 * (4 * d * d + 2 * d * f)


def test_transformer_options() -> None:
    assert bert_base(1, seq_len=512).layer("encoder.0.attn.qk").output_shape == (12, 512, 512)
    vit = vit_b16(2, image_size=384, classes=10)
    assert vit.layer("blocks.11.mlp.fc1").gemm(2) == (3072, 768, 2 * 577)
    assert vit.layer("head").output_shape == (1, 10)
    with pytest.raises(ModelError, match="multiple of 16"):
        vit_b16(1, image_size=200)


# -- dense layers, GEMM views, shapes ----------------------------------------------------------

DENSE = {
    "mlp": {"fc3"},
    "cnn": {"conv1", "fc"},
    "resnet18": {"conv1", "fc"},
    "resnet18_cifar": {"conv1", "fc"},
    "resnet50": {"conv1", "fc"},
    "vgg16": {"conv1_1", "fc8"},
    "vit_b16": {"patch_embed", "head"},
    "bert_base": {"classifier"},
}


def test_every_zoo_model_is_covered() -> None:
    assert set(model_names()) == set(DENSE)


@pytest.mark.parametrize("name", model_names())
def test_dense_layers_are_the_stem_and_the_classifier(name: str) -> None:
    model = get_model(name, 1)
    assert {layer.name for layer in model.weight_layers if not layer.sparse} == DENSE[name]
    # The classifier is the last weight layer; MatMuls never count as weight layers.
    assert model.weight_layers[-1].name in DENSE[name]
    assert all(not isinstance(layer, MatMul) for layer in model.weight_layers)


@pytest.mark.parametrize(
    ("name", "layer", "gemm"),
    [
        ("resnet50", "layer1.0.conv1", (64, 64, 56 * 56)),
        ("resnet50", "layer1.0.conv2", (64, 576, 56 * 56)),
        ("resnet50", "layer1.0.downsample.0", (256, 64, 56 * 56)),
        ("resnet50", "layer2.0.conv2", (128, 1152, 28 * 28)),  # v1.5: stride on the 3x3
        ("resnet50", "layer2.0.conv1", (128, 256, 56 * 56)),
        ("resnet50", "layer4.2.conv3", (2048, 512, 7 * 7)),
        ("resnet50", "conv1", (64, 147, 112 * 112)),
        ("resnet50", "fc", (1000, 2048, 1)),
        ("resnet18", "layer3.0.downsample.0", (256, 128, 14 * 14)),
        ("resnet18_cifar", "layer3.1.conv2", (256, 2304, 8 * 8)),
        ("vgg16", "fc6", (4096, 25088, 1)),
        ("vgg16", "conv5_3", (512, 4608, 14 * 14)),
        ("vit_b16", "blocks.0.attn.qkv", (2304, 768, 197)),
        ("vit_b16", "patch_embed", (768, 768, 196)),
        ("bert_base", "encoder.11.mlp.fc2", (768, 3072, 128)),
    ],
)
@pytest.mark.parametrize("batch", [1, 32])
def test_gemm_dims_of_known_layers(
    name: str, layer: str, gemm: tuple[int, int, int], batch: int
) -> None:
    found = get_model(name, batch).layer(layer)
    assert isinstance(found, WeightLayer)
    c_out, k, p = gemm
    assert found.gemm(batch) == (c_out, k, batch * p)
    assert found.gemm_count(batch) == 1


def test_attention_products() -> None:
    model = get_model("vit_b16", 4)
    qk, av = model.layer("blocks.3.attn.qk"), model.layer("blocks.3.attn.av")
    assert isinstance(qk, MatMul)
    assert isinstance(av, MatMul)
    assert (qk.gemm(4), qk.gemm_count(4)) == ((197, 64, 197), 48)
    assert (av.gemm(4), av.gemm_count(4)) == ((197, 197, 64), 48)
    assert qk.weight_count == 0


@pytest.mark.parametrize(
    ("name", "layer", "shape"),
    [
        ("resnet50", "maxpool", (64, 56, 56)),
        ("resnet50", "avgpool", (2048, 1, 1)),
        ("resnet18_cifar", "layer4.1.relu2", (512, 4, 4)),
        ("vgg16", "pool5", (512, 7, 7)),
        ("vit_b16", "blocks.0.add2", (197, 768)),
        ("cnn", "relu2", (32, 4, 4)),
    ],
)
def test_output_shapes(name: str, layer: str, shape: tuple[int, ...]) -> None:
    assert get_model(name, 1).layer(layer).output_shape == shape


def test_residual_adds_match_their_block() -> None:
    model = get_model("resnet50", 1)
    adds = [layer for layer in model.layers if isinstance(layer, Add)]
    assert len(adds) == 16
    for add in adds:
        conv3 = model.layer(add.name.replace(".add", ".conv3"))
        assert add.shape == conv3.output_shape


# -- batch -----------------------------------------------------------------------------------


@given(name=st.sampled_from(model_names()), batch=st.integers(1, 4096))
def test_batch_scales_p_and_totals_only(name: str, batch: int) -> None:
    one, many = get_model(name, 1), get_model(name, batch)
    assert many.layers == one.layers  # layers are per sample
    assert many.forward_macs == batch * one.macs_per_sample
    assert many.weight_count == one.weight_count
    for layer in many.weight_layers:
        c_out, k, p = layer.gemm(batch)
        assert (c_out, k, p // batch) == layer.gemm(1)
        assert p % batch == 0
        assert c_out * k * p == batch * layer.macs_per_sample
    assert one.with_batch(batch) == many


@pytest.mark.parametrize("batch", [0, -3, True, 2.0])
def test_bad_batch_is_one_line_error(batch: Any) -> None:
    with pytest.raises(NmsatError, match="batch must be an integer >= 1") as info:
        get_model("mlp", batch)
    assert "\n" not in str(info.value)


def test_unknown_name_lists_the_allowed_names() -> None:
    with pytest.raises(NmsatError) as info:
        get_model("resnet-50", 1)
    message = str(info.value)
    assert "\n" not in message
    assert "'resnet-50'" in message
    assert all(name in message for name in model_names())


# -- sparsity decisions ------------------------------------------------------------------------


@given(
    c_in=st.integers(1, 64),
    c_out=st.integers(1, 64),
    m=st.sampled_from([1, 2, 4, 8, 16]),
    sparse=st.booleans(),
)
def test_sparse_passes_follow_divisibility(c_in: int, c_out: int, m: int, sparse: bool) -> None:
    layer = Linear(name="fc", c_in=c_in, c_out=c_out, sparse=sparse)
    ff_ok = sparse and c_in % m == 0
    both = ff_ok and c_out % m == 0
    assert layer.sparse_passes(m) == (both, both)
    assert layer.sparse_passes(m, "forward") == (ff_ok, False)
    assert layer.sparse_passes(m, "dense") == (False, False)


def test_sparse_layers_of_a_model() -> None:
    model = get_model("resnet18_cifar", 8)
    sparse = model.sparse_layers(8)
    assert len(sparse) == len(model.weight_layers) - 2
    assert model.layer("conv1") not in sparse
    # A C_in = 3 stem would be dense at every M > 1 even if marked eligible.
    stem = dataclasses.replace(model.layer("conv1"), sparse=True)
    assert isinstance(stem, WeightLayer)
    assert stem.sparse_passes(4) == (False, False)


# -- layer records -----------------------------------------------------------------------------


@given(
    size=st.integers(1, 64),
    kernel=st.integers(1, 7),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    c_in=st.integers(1, 16),
    c_out=st.integers(1, 16),
)
def test_conv_geometry(
    size: int, kernel: int, stride: int, padding: int, c_in: int, c_out: int
) -> None:
    fields = {"c_in": c_in, "c_out": c_out, "kh": kernel, "kw": kernel, "stride": stride}
    fields |= {"padding": padding, "h_in": size, "w_in": size + 1}
    if size + 2 * padding < kernel:
        with pytest.raises(ShapeError, match="kh"):
            Conv2d(name="c", **fields)
        return
    conv = Conv2d(name="c", **fields)
    h_out = len(range(0, size + 2 * padding - kernel + 1, stride))
    w_out = len(range(0, size + 1 + 2 * padding - kernel + 1, stride))
    assert conv.output_shape == (c_out, h_out, w_out)
    assert conv.macs_per_sample == c_out * c_in * kernel * kernel * h_out * w_out


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Conv2d(name="c", c_in=0, c_out=8, kh=3, kw=3, h_in=8, w_in=8), "c_in"),
        (lambda: Conv2d(name="c", c_in=3, c_out=8, kh=3, kw=3, h_in=8, w_in=2), "kw"),
        (lambda: Linear(name="fc", c_in=True, c_out=8), "c_in"),
        (lambda: Linear(name="", c_in=4, c_out=8), "name"),
        (lambda: Pool(name="p", kind="min", c=1, h_in=4, w_in=4, kernel=2, stride=2), "kind"),
        (lambda: ReLU(name="r", shape=(4, 0)), "shape"),
        (lambda: MatMul(name="mm", m=4, k=0, n=4), "k"),
    ],
)
def test_invalid_layers_raise_shape_error(build: Any, match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        build()


def test_layer_records_are_frozen_and_normalised() -> None:
    relu = ReLU(name="r", shape=[2, 3])
    assert relu.shape == (2, 3)
    assert relu.elements == 6
    with pytest.raises(dataclasses.FrozenInstanceError):
        relu.name = "s"
    with pytest.raises(TypeError):
        ElementwiseLayer(name="e", shape=(1,))


def test_model_rejects_duplicates_and_empty() -> None:
    fc = Linear(name="fc", c_in=4, c_out=4)
    with pytest.raises(ModelError, match="used twice"):
        Model("m", 1, (fc, fc))
    with pytest.raises(ModelError, match="no layers"):
        Model("m", 1, ())
    with pytest.raises(ModelError, match="no layer named"):
        Model("m", 1, (fc,)).layer("conv")


def test_summary_lists_every_layer_and_the_totals() -> None:
    model = get_model("resnet18", 2)
    text = model.summary()
    for layer in model.layers:
        assert layer.name in text
    assert "1.814 G per sample" in text
    assert "11.679 M" in text
    assert "64x147x25088" in text  # conv1 at batch 2


# -- YAML layer files --------------------------------------------------------------------------


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "net.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize("path", sorted(ZOO_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_example_files_load(path: Path) -> None:
    model = load_model_yaml(path, 4)
    assert model.batch == 4
    assert model.weight_layers


def test_example_mlp_is_the_zoo_mlp() -> None:
    model = load_model_yaml(ZOO_DIR / "example_mlp.yaml", 16)
    assert model.name == "example_mlp"
    assert model.layers == get_model("mlp", 16).layers


def _as_yaml_entry(layer: Any, previous: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"op": layer.op}
    for field in dataclasses.fields(layer):
        value = getattr(layer, field.name)
        entry[field.name] = list(value) if isinstance(value, tuple) else value
    del entry["inputs"]
    if layer.arity == 2:
        entry["inputs"] = list(layer.inputs)  # add, matmul: both operands named
    elif layer.inputs == (previous,):
        entry["input"] = None  # every size given, nothing inferred
    else:
        entry["input"] = layer.inputs[0]  # a branch: its given sizes are checked
    return entry


@pytest.mark.parametrize("name", model_names())
def test_zoo_models_round_trip_through_yaml(name: str, tmp_path: Path) -> None:
    model = get_model(name, 3)
    names = ["input", *(layer.name for layer in model.layers)]
    doc = {
        "name": name,
        "input": list(model.input_shape or ()),
        "layers": [
            _as_yaml_entry(layer, previous)
            for layer, previous in zip(model.layers, names, strict=False)
        ],
    }
    assert load_model_yaml(_write(tmp_path, doc), 3) == model


def test_yaml_infers_and_checks_shapes(tmp_path: Path) -> None:
    doc = {
        "input": [3, 16, 16],
        "layers": [
            {"op": "conv2d", "name": "stem", "c_out": 16, "kh": 3, "kw": 3, "padding": 1},
            {"op": "relu", "name": "r"},
            {"op": "conv2d", "name": "a", "c_out": 32, "kh": 3, "kw": 3, "stride": 2},
            {"op": "conv2d", "name": "b", "input": "r", "c_out": 32, "kh": 1, "kw": 1},
            {"op": "pool", "name": "p", "kind": "max", "kernel": 2},
            {"op": "linear", "name": "tok", "tokens": 64, "c_out": 8},
            {"op": "linear", "name": "fc", "input": "a", "c_out": 10},
        ],
    }
    model = load_model_yaml(_write(tmp_path, doc), 2)
    assert model.layer("a").output_shape == (32, 7, 7)
    assert model.layer("b").output_shape == (32, 16, 16)  # read the ReLU, not "a"
    assert model.layer("p").output_shape == (32, 8, 8)  # stride defaults to the kernel
    tok = model.layer("tok")
    assert isinstance(tok, Linear)
    assert (tok.tokens, tok.c_in) == (64, 32)
    fc = model.layer("fc")
    assert isinstance(fc, Linear)
    assert (fc.tokens, fc.c_in) == (1, 32 * 7 * 7)
    # Eligible by default, except the last weight layer (the classifier).
    assert [layer.sparse for layer in model.weight_layers] == [True, True, True, True, False]


BASE = "input: [3, 8, 8]\nlayers:\n"


@pytest.mark.parametrize(
    ("text", "key", "rule"),
    [
        (BASE + "  - {op: conv2d, c_out: 8, kh: 9, kw: 3}", "kh 9", "larger than the padded"),
        (BASE + "  - {op: conv2d, c_out: 8, kh: 3, kw: 3, h_in: 9}", "h_in", "does not match"),
        (BASE + "  - {op: conv2d, c_out: 8, kh: 3, kw: 3, colour: 1}", "colour", "unknown key"),
        (BASE + "  - {op: conv2d, c_out: 8.5, kh: 3, kw: 3}", "c_out", "must be an integer"),
        (BASE + "  - {op: conv2d, c_out: '8', kh: 3, kw: 3}", "c_out", "must be an integer"),
        (BASE + "  - {op: conv2d, kh: 3, kw: 3}", "c_out", "missing"),
        (BASE + "  - {op: conv2d, c_out: 0, kh: 3, kw: 3}", "c_out", "must be >= 1"),
        (BASE + "  - {op: conv2d, c_out: 4, kh: 1, kw: 1, padding: -1}", "padding", ">= 0"),
        (BASE + "  - {op: linear, c_out: 10, c_in: 7}", "c_in", "does not divide"),
        (BASE + "  - {op: linear, c_out: 10, c_in: 3, tokens: 2}", "c_in", "elements"),
        (BASE + "  - {op: linear, c_out: 10, sparse: 1}", "sparse", "true or false"),
        (BASE + "  - {op: lstm}", "op", "allowed: conv2d"),
        (BASE + "  - {op: relu, input: nope}", "input", "earlier layer"),
        (BASE + "  - {op: relu, name: input}", "name", "reserved"),
        (BASE + "  - {op: relu, name: a}\n  - {op: relu, name: a}", "name", "already used"),
        (BASE + "  - {op: relu, shape: [7]}", "shape", "size"),
        (BASE + "  - {op: relu, input: null}", "shape", "missing"),
        (BASE + "  - {op: matmul, m: 2, k: 2, n: 2, input: r}", "input", "unknown key"),
        (BASE + "  - {op: pool, kind: min, kernel: 2}", "kind", "allowed: max, avg"),
        (BASE + "  - {op: norm, kind: batch, bogus: 1}", "bogus", "unknown key"),
        ("input: [3, 8, 8]\nlay: []\n", "lay", "unknown key"),
        ("input: [3, 8, 8]\n", "layers", "missing"),
        ("input: [3, 0]\nlayers: [{op: relu}]\n", "input", ">= 1"),
        ("input: [3, 8, 8]\nlayers: []\n", "layers", "non-empty"),
        ("[1, 2]\n", "file", "mapping"),
        ("input: [3, 8\n", "not valid YAML", "line"),
    ],
)
def test_yaml_errors_are_one_line_and_name_the_key(
    tmp_path: Path, text: str, key: str, rule: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(NmsatError) as info:
        load_model_yaml(path, 1)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert key in message
    assert rule in message


def test_yaml_error_names_the_layer(tmp_path: Path) -> None:
    text = BASE + "  - {op: relu, name: r}\n  - {op: conv2d, name: c3, c_out: 8, kh: 9, kw: 9}"
    with pytest.raises(ModelError, match=r"layer 1 \(c3\): kh 9"):
        load_model_yaml(_write(tmp_path, text), 1)


def test_yaml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        load_model_yaml(tmp_path / "none.yaml", 1)


def test_cli_prints_the_zoo(capsys: pytest.CaptureFixture[str]) -> None:
    from nmsat.cli import main

    assert main(["zoo"]) == 0
    assert capsys.readouterr().out.split() == list(model_names())
    assert main(["zoo", "resnet50", "--batch", "8"]) == 0
    assert "layer1.0.conv2" in capsys.readouterr().out
    assert main(["zoo", "alexnet"]) == 2


def test_sparse_passes_rejects_unknown_modes() -> None:
    layer = Linear(name="fc", c_in=3, c_out=8)
    with pytest.raises(ShapeError, match="allowed: bdwp, forward, dense"):
        layer.sparse_passes(4, "both")  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="m must be"):
        layer.sparse_passes(0)
