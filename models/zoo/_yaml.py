"""Users' own layer lists: a YAML file in, a validated :class:`~nmsat.models.zoo.Model` out.

The schema is documented in docs/zoo.md (example: ``models/zoo/example_mlp.yaml``). Keys are
the field names of the layer records; sizes a layer can take from its input may be left out,
and sizes that are given are checked against it. Every problem raises
:class:`~nmsat.models.zoo.ModelError` in one line naming the file, the layer (index and
name), the key and the rule.

Ref: docs/zoo.md (schema, input rules, sparsity defaults); STYLE.md G3 (unknown keys and
     wrong types rejected with a one-line error).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from nmsat.hw.errors import NmsatError

from ._layers import Conv2d, Layer, Linear, MatMul
from ._model import Model, ModelError
from ._ops import GELU, Add, Norm, Pool, ReLU, Softmax

__all__ = ["load_model_yaml"]

_TOP_KEYS = {"name": False, "input": True, "layers": True, "description": False}
_COMMON = ("op", "name", "input")
# Keys per op beyond op, name and input; True marks the required ones.
_OP_KEYS: dict[str, dict[str, bool]] = {
    "conv2d": {
        **dict.fromkeys(("c_out", "kh", "kw"), True),
        **dict.fromkeys(("c_in", "h_in", "w_in", "stride", "padding", "sparse"), False),
    },
    "linear": {"c_out": True, "c_in": False, "tokens": False, "sparse": False},
    "matmul": {"m": True, "k": True, "n": True, "count": False, "inputs": True},
    "pool": {
        **dict.fromkeys(("kind", "kernel"), True),
        **dict.fromkeys(("c", "h_in", "w_in", "stride", "padding"), False),
    },
    "norm": {"kind": True, "shape": False},
    **{op: {"shape": False} for op in ("relu", "gelu", "softmax")},
    "add": {"shape": False, "inputs": False, "parameter": False},
}
_WEIGHT_OPS = ("conv2d", "linear")
_KINDS = {"pool": ("max", "avg"), "norm": ("batch", "layer")}
_ELEMENTWISE: dict[str, Callable[..., Layer]] = {
    "relu": ReLU,
    "gelu": GELU,
    "add": Add,
    "softmax": Softmax,
    "norm": Norm,
}
_CONSTRUCTORS: dict[str, Callable[..., Layer]] = {
    "conv2d": Conv2d,
    "linear": Linear,
    "matmul": MatMul,
    "pool": Pool,
    **_ELEMENTWISE,
}


class _Where:
    """Formats one-line errors: file, layer index and name, key, rule."""

    def __init__(self, path: str, index: int | None = None, name: str = "") -> None:
        self.prefix = path if index is None else f"{path}: layer {index} ({name})"

    def error(self, key: str, rule: str) -> ModelError:
        return ModelError(f"{self.prefix}: {key}: {rule}")


def _int(where: _Where, key: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise where.error(key, f"must be an integer, got {value!r}")
    if value < minimum:
        raise where.error(key, f"must be >= {minimum}, got {value}")
    return value


def _shape(where: _Where, key: str, value: Any, max_dims: int = 4) -> tuple[int, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= max_dims:
        raise where.error(
            key, f"must be a list of 1 to {max_dims} positive integers, got {value!r}"
        )
    return tuple(_int(where, key, size) for size in value)


def load_model_yaml(path: str | Path, batch: int) -> Model:
    """Load a layer list from a YAML file.

    Parameters
    ----------
    path : str or Path
        The file (schema in docs/zoo.md).
    batch : int
        Samples per training step, >= 1.

    Returns
    -------
    Model
        Named by the file's ``name`` key, or by the file name without its extension.

    Raises
    ------
    ModelError
        If the file cannot be read or parsed, has an unknown or missing key, a value of the
        wrong type, a size that is not positive, a kernel larger than its padded input, or a
        size that disagrees with its input.
    """
    text_path = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"{text_path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ModelError(f"{text_path}: not a UTF-8 text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        detail = f" ({' '.join(str(problem).split())})" if problem else ""
        raise ModelError(f"{text_path}: not valid YAML{line}{detail}") from None
    top = _Where(text_path)
    if not isinstance(doc, dict):
        raise top.error("file", "must be a mapping with keys input and layers")
    _check_keys(top, doc, _TOP_KEYS)
    name = doc.get("name", Path(path).stem)
    if not isinstance(name, str) or not name:
        raise top.error("name", f"must be a non-empty string, got {name!r}")
    if not isinstance(doc.get("description", ""), str):
        raise top.error("description", "must be a string")
    input_shape = _shape(top, "input", doc["input"], max_dims=3)
    entries = doc["layers"]
    if not isinstance(entries, list) or not entries:
        raise top.error("layers", "must be a non-empty list of layer mappings")
    # The last weight layer is the classifier: dense unless the file says otherwise.
    weight_indices = [
        i for i, e in enumerate(entries) if isinstance(e, dict) and e.get("op") in _WEIGHT_OPS
    ]
    classifier = weight_indices[-1] if weight_indices else -1
    shapes: dict[str, tuple[int, ...]] = {"input": input_shape}
    layers: list[Layer] = []
    for index, entry in enumerate(entries):
        layer = _layer(text_path, index, entry, shapes, layers, index != classifier)
        layers.append(layer)
        shapes[layer.name] = layer.output_shape
    try:
        return Model(name, batch, tuple(layers), input_shape)
    except ModelError as exc:
        raise ModelError(f"{text_path}: {exc}") from None


def _check_keys(where: _Where, entry: Mapping[Any, Any], allowed: Mapping[str, bool]) -> None:
    for key in entry:
        if key not in allowed:
            raise where.error(str(key), f"unknown key; allowed: {', '.join(allowed)}")
    for key, required in allowed.items():
        if required and key not in entry:
            raise where.error(key, "missing (required)")


def _layer(
    path: str,
    index: int,
    entry: Any,
    shapes: dict[str, tuple[int, ...]],
    layers: list[Layer],
    sparse_default: bool,
) -> Layer:
    if not isinstance(entry, dict):
        raise _Where(path, index, "?").error(
            "layer", f"must be a mapping with an op key, got {entry!r}"
        )
    op = entry.get("op")
    name = entry.get("name", f"{op}_{index}")
    where = _Where(path, index, str(name))
    if op not in _OP_KEYS:
        raise where.error("op", f"{op!r} is not an op; allowed: {', '.join(_OP_KEYS)}")
    if not isinstance(name, str) or not name:
        raise where.error("name", f"must be a non-empty string, got {name!r}")
    if name == "input":
        raise where.error("name", "'input' is reserved: it names the model's input")
    if name in shapes:
        raise where.error("name", f"{name!r} is already used (names must be unique)")
    allowed = dict.fromkeys(_COMMON, False) | _OP_KEYS[op]
    if op == "matmul":
        del allowed["input"]  # two operands: inputs
    _check_keys(where, entry, allowed)
    fields: dict[str, Any] = {"name": name}
    for key, value in entry.items():
        if key in ("op", "name", "input", "inputs"):
            continue
        if key in ("sparse", "parameter"):
            if not isinstance(value, bool):
                raise where.error(key, f"must be true or false, got {value!r}")
            fields[key] = value
        elif key == "kind":
            if value not in _KINDS[op]:
                raise where.error(key, f"{value!r}; allowed: {', '.join(_KINDS[op])}")
            fields[key] = value
        elif key == "shape":
            fields[key] = _shape(where, key, value)
        else:
            fields[key] = _int(where, key, value, 0 if key == "padding" else 1)
    two = _two_inputs(where, entry, shapes, op, fields.get("parameter", False))
    if two is not None:
        fields["inputs"] = two
        _check_operands(where, fields, two, shapes, op)
        return _build(where, op, fields)
    source = _source(where, entry, shapes, layers)
    if isinstance(entry.get("input"), str):
        fields["inputs"] = (entry["input"],)
    if op == "conv2d":
        _spatial_input(where, fields, source, "c_in")
        fields.setdefault("sparse", sparse_default)
    elif op == "pool":
        _spatial_input(where, fields, source, "c")
        fields.setdefault("stride", fields["kernel"])
    elif op == "linear":
        _linear_input(where, fields, source)
        fields.setdefault("sparse", sparse_default)
    elif op in _ELEMENTWISE:
        _elementwise_input(where, fields, source)
    return _build(where, op, fields)


def _build(where: _Where, op: str, fields: dict[str, Any]) -> Layer:
    try:
        return _CONSTRUCTORS[op](**fields)
    except NmsatError as exc:
        message = str(exc).removeprefix(f"layer {fields['name']!r}: ")
        raise ModelError(f"{where.prefix}: {message}") from None


def _two_inputs(
    where: _Where,
    entry: Mapping[str, Any],
    shapes: dict[str, tuple[int, ...]],
    op: str,
    parameter: bool,
) -> tuple[str, str] | None:
    """Return the two operands of a matmul or an add, or None for a one-input layer.

    An add reads two tensors unless ``parameter: true`` (its second operand is its own
    parameter): then it takes ``input`` like any one-input layer. No default is guessed.
    """
    if op not in ("add", "matmul") or parameter:
        if "inputs" in entry:
            raise where.error(
                "inputs", "only an add or a matmul reads two tensors; use input for one"
            )
        return None
    if op == "add" and "input" in entry:
        raise where.error(
            "input", "an add reads two tensors: give inputs: [a, b] (or parameter: true)"
        )
    if "inputs" not in entry:
        raise where.error(
            "inputs",
            f"missing: an {op} reads two tensors, give inputs: [a, b] (names of earlier "
            "layers or 'input'; a residual: [main path, shortcut])",
        )
    refs = entry["inputs"]
    if not isinstance(refs, list) or len(refs) != 2:
        raise where.error("inputs", f"must be a list of two layer names, got {refs!r}")
    for ref in refs:
        if not isinstance(ref, str) or ref not in shapes:
            raise where.error("inputs", f"{ref!r} is not 'input' or the name of an earlier layer")
    return refs[0], refs[1]


def _check_operands(
    where: _Where,
    fields: dict[str, Any],
    refs: tuple[str, str],
    shapes: dict[str, tuple[int, ...]],
    op: str,
) -> None:
    """Give an add its operands' shape and check that both have it; size a matmul's."""
    if op == "add":
        shape = fields.setdefault("shape", shapes[refs[0]])
        for ref in refs:
            if shapes[ref] != shape:
                raise where.error(
                    "inputs", f"{ref!r} has shape {list(shapes[ref])}, not the add's {list(shape)}"
                )
        return
    count = fields.get("count", 1)
    needs = (count * fields["m"] * fields["k"], count * fields["k"] * fields["n"])
    for operand, ref, need in zip("AB", refs, needs, strict=True):
        if math.prod(shapes[ref]) < need:
            raise where.error(
                "inputs",
                f"operand {operand} {ref!r} has {math.prod(shapes[ref])} elements, fewer than "
                f"the {need} the product reads",
            )


def _source(
    where: _Where,
    entry: Mapping[str, Any],
    shapes: dict[str, tuple[int, ...]],
    layers: list[Layer],
) -> tuple[int, ...] | None:
    """Return the shape of the layer's input, or None where nothing can be checked."""
    if "input" not in entry:
        return layers[-1].output_shape if layers else shapes["input"]
    ref = entry["input"]
    if ref is None:
        return None
    if not isinstance(ref, str) or ref not in shapes:
        raise where.error("input", f"{ref!r} is not 'input', null or the name of an earlier layer")
    return shapes[ref]


def _spatial_input(
    where: _Where, fields: dict[str, Any], source: tuple[int, ...] | None, c_key: str
) -> None:
    keys = (c_key, "h_in", "w_in")
    if source is not None and len(source) == 3:
        for key, size in zip(keys, source, strict=True):
            if fields.setdefault(key, size) != size:
                raise where.error(key, f"{fields[key]} does not match the input's {size}")
        return
    missing = [key for key in keys if key not in fields]
    if missing:
        raise where.error(
            missing[0], "missing: the input is not a C x H x W feature map, give c, h_in, w_in"
        )
    if source is not None and math.prod(fields[key] for key in keys) != math.prod(source):
        raise where.error(
            c_key, f"{c_key} x h_in x w_in does not have the input's {math.prod(source)} elements"
        )


def _linear_input(where: _Where, fields: dict[str, Any], source: tuple[int, ...] | None) -> None:
    if source is None:
        if "c_in" not in fields:
            raise where.error("c_in", "missing: the input is null, give c_in (and tokens)")
        return
    elements = math.prod(source)
    tokens, c_in = source if len(source) == 2 else (1, elements)
    if "c_in" in fields and "tokens" not in fields:
        if elements % fields["c_in"]:
            raise where.error(
                "c_in", f"{fields['c_in']} does not divide the input's {elements} elements"
            )
        tokens = elements // fields["c_in"]
    elif "tokens" in fields and "c_in" not in fields:
        if elements % fields["tokens"]:
            raise where.error(
                "tokens", f"{fields['tokens']} does not divide the input's {elements} elements"
            )
        c_in = elements // fields["tokens"]
    fields.setdefault("tokens", tokens)
    fields.setdefault("c_in", c_in)
    if fields["tokens"] * fields["c_in"] != elements:
        raise where.error(
            "c_in",
            f"tokens {fields['tokens']} x c_in {fields['c_in']} != the input's {elements} elements",
        )


def _elementwise_input(
    where: _Where, fields: dict[str, Any], source: tuple[int, ...] | None
) -> None:
    if source is None:
        if "shape" not in fields:
            raise where.error("shape", "missing: the input is null, give shape")
        return
    shape = fields.setdefault("shape", source)
    if math.prod(shape) != math.prod(source):
        raise where.error("shape", f"{list(shape)} does not have the input's {list(source)} size")
