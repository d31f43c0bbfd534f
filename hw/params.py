"""SATParams: the one parameter set of the accelerator.

Every part of nmsat (the HDL, the compiler, the Python model, the energy model, the reports)
takes a :class:`SATParams`; nothing re-declares a size (DESIGN.md section 3.1, STYLE.md G3).
Presets live in ``configs/*.yaml`` and are loaded with :func:`load_params`; the command line
changes single keys only through ``--set key=value``, which goes through the same validation.

Ref: C. Fang et al., "Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and
     Dataflow Co-Design", IEEE TCAD 2023 (SAT: STCE, SORE, WUVE; VCU1525 board).
Ref: T. Chen et al., VTA (2018): per-queue instruction FIFOs with dependency tokens.

Part of the contract: imports nothing from nmsat but :mod:`nmsat.hw.errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.resources
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .files import read_yaml_mapping, resolve_data_file

__all__ = [
    "BUFFER_ADDR_BITS",
    "DRAM_ADDR_BITS",
    "QUEUE_NAMES",
    "SATParams",
    "format_nm",
    "load_params",
    "preset_names",
    "presets_dir",
]

#: Width of every on-chip buffer address in the ISA, in elements of that buffer. A buffer may
#: hold at most ``2**BUFFER_ADDR_BITS`` elements (16 Mi: more than the XCVU9P's 43 MB of BRAM
#: and URAM could hold of FP16 values).
BUFFER_ADDR_BITS = 24

#: Width of external-memory byte addresses in the ISA (1 TiB; the VCU1525 has 64 GiB of DDR4).
DRAM_ADDR_BITS = 40

#: The instruction queues, in the order of the ISA's token masks (``nmsat.hw.isa.Queue``).
QUEUE_NAMES = ("load", "compute", "prune", "update", "store")

_NM_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_TABLE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _is_pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def format_nm(n: int, m: int) -> str:
    """Return the ``"N:M"`` spelling of a pattern, ``"dense"`` when ``n == m``."""
    return "dense" if n == m else f"{n}:{m}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SATParams:
    """The accelerator's parameters, validated on construction.

    Construct from YAML with :func:`load_params`; direct construction validates the same way.
    Derived sizes are properties, never stored copies.
    """

    name: str
    """Name of the configuration, reported in every output."""

    array_rows: int
    """PE rows R of the STCE systolic array (power of two, 2..256)."""

    array_cols: int
    """PE columns C of the STCE systolic array (power of two, 2..256)."""

    nm_patterns: tuple[tuple[int, int], ...]
    """Supported N:M patterns besides dense, as (N, M) with 1 <= N < M, M in {2, 4, 8, 16}.
    Dense (N == M) is always supported: it is the same datapath with every index in use."""

    adder_latency: int
    """Pipeline stages of the FP32 adder in the PEs and the WUVE, in cycles (1..16)."""

    multiplier_latency: int
    """Pipeline stages of the WUVE's FP32 multiplier, in cycles (1..16). The PEs' FP16 x FP16
    product is exact and folded into their input register stage."""

    interleave: int
    """Independent accumulations each PE can interleave (accumulator registers per PE,
    1..16). Interleave mapping hides the adder latency when ``interleave >= adder_latency``."""

    act_buffer_bytes: int
    """Activation buffer (FP16 elements)."""

    wgt_buffer_bytes: int
    """Weight buffer (FP16 values, dense or N:M compressed). A parallel index buffer holds one
    ``index_bits``-bit index per weight entry; its size is derived."""

    acc_buffer_bytes: int
    """Accumulator buffer (FP32 elements): GEMM outputs and weight gradients."""

    vec_buffer_bytes: int
    """WUVE buffer (FP32 elements): master weights, momentum, optimizer hyper-parameters."""

    buffer_banks: int
    """Banks of every on-chip buffer (power of two, 1..64)."""

    sore_lanes: int
    """SORE lanes; each lane prunes one M-group per cycle (power of two, 1..256)."""

    wuve_lanes: int
    """WUVE lanes: FP32 elements per cycle (power of two, 1..256)."""

    clock_hz: float
    """Target clock of the accelerator, in Hz (1 MHz..2 GHz)."""

    dram_bytes_per_cycle: int
    """External memory bandwidth in bytes per accelerator cycle (power of two, 1..1024)."""

    dram_latency_cycles: int
    """Fixed latency of an external memory request, in cycles (1..10000; the DMA needs one
    cycle to read the buffer before a STORE's first beat)."""

    dram_bytes: int
    """Size of external memory, in bytes (power of two, up to 2**DRAM_ADDR_BITS)."""

    queue_depths: tuple[int, ...]
    """Instruction queue depth per queue, in QUEUE_NAMES order (1..1024 each)."""

    token_depth: int
    """Maximum outstanding dependency tokens between one pair of queues (1..255)."""

    energy_table: str
    """Name of the energy table, ``configs/energy/<name>.yaml``."""

    operand_format: Literal["fp16"] = "fp16"
    """GEMM operand format (nmsat.hw.numerics): FP16 only."""

    accumulator_format: Literal["fp32"] = "fp32"
    """GEMM accumulation and WUVE format (nmsat.hw.numerics): FP32 only."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name))
        _check_values(self)

    # -- derived sizes ---------------------------------------------------------------------

    @functools.cached_property
    def pe_count(self) -> int:
        """Number of PEs, ``array_rows * array_cols``."""
        return self.array_rows * self.array_cols

    @functools.cached_property
    def m_max(self) -> int:
        """Largest group size M among the supported patterns (1 when only dense)."""
        return max((m for _, m in self.nm_patterns), default=1)

    @functools.cached_property
    def index_bits(self) -> int:
        """Bits of one N:M index, ``log2(m_max)`` (at least 1)."""
        return max(1, int(math.log2(self.m_max)))

    @functools.cached_property
    def act_buffer_entries(self) -> int:
        """FP16 elements in the activation buffer."""
        return self.act_buffer_bytes // 2

    @functools.cached_property
    def wgt_buffer_entries(self) -> int:
        """FP16 elements in the weight buffer (and indices in the index buffer)."""
        return self.wgt_buffer_bytes // 2

    @functools.cached_property
    def idx_buffer_bits(self) -> int:
        """Size of the index buffer in bits: one index per weight entry."""
        return self.wgt_buffer_entries * self.index_bits

    @functools.cached_property
    def acc_buffer_entries(self) -> int:
        """FP32 elements in the accumulator buffer."""
        return self.acc_buffer_bytes // 4

    @functools.cached_property
    def vec_buffer_entries(self) -> int:
        """FP32 elements in the WUVE buffer."""
        return self.vec_buffer_bytes // 4

    @functools.cached_property
    def dram_bandwidth_bytes_per_s(self) -> float:
        """External memory bandwidth in bytes per second."""
        return self.dram_bytes_per_cycle * self.clock_hz

    @functools.cached_property
    def peak_macs_per_s(self) -> float:
        """Dense peak of the STCE, one MAC per PE per cycle."""
        return self.pe_count * self.clock_hz

    def supports_nm(self, n: int, m: int) -> bool:
        """Return whether the STCE and SORE support the pattern (dense always)."""
        return n == m or (n, m) in self.nm_patterns

    def queue_depth(self, queue: str) -> int:
        """Return the depth of the instruction queue named ``queue`` (see QUEUE_NAMES)."""
        return self.queue_depths[QUEUE_NAMES.index(queue)]

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as YAML-ready data (the inverse of loading)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "nm_patterns":
                value = [f"{n}:{m}" for n, m in value]
            elif field.name == "queue_depths":
                value = dict(zip(QUEUE_NAMES, value, strict=True))
            out[field.name] = value
        return out

    def replace(self, **changes: Any) -> SATParams:
        """Return a copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)


# -- validation ------------------------------------------------------------------------------

_INT_RULES: dict[str, tuple[str, Any]] = {
    "array_rows": ("a power of two in [2, 256]", lambda v: _is_pow2(v) and 2 <= v <= 256),
    "array_cols": ("a power of two in [2, 256]", lambda v: _is_pow2(v) and 2 <= v <= 256),
    "adder_latency": ("an integer in [1, 16]", lambda v: 1 <= v <= 16),
    "multiplier_latency": ("an integer in [1, 16]", lambda v: 1 <= v <= 16),
    "interleave": ("an integer in [1, 16]", lambda v: 1 <= v <= 16),
    "buffer_banks": ("a power of two in [1, 64]", lambda v: _is_pow2(v) and v <= 64),
    "sore_lanes": ("a power of two in [1, 256]", lambda v: _is_pow2(v) and v <= 256),
    "wuve_lanes": ("a power of two in [1, 256]", lambda v: _is_pow2(v) and v <= 256),
    "dram_bytes_per_cycle": ("a power of two in [1, 1024]", lambda v: _is_pow2(v) and v <= 1024),
    "dram_latency_cycles": ("an integer in [1, 10000]", lambda v: 1 <= v <= 10000),
    "dram_bytes": (
        f"a power of two in [4096, 2**{DRAM_ADDR_BITS}]",
        lambda v: _is_pow2(v) and 4096 <= v <= 2**DRAM_ADDR_BITS,
    ),
    "token_depth": ("an integer in [1, 255]", lambda v: 1 <= v <= 255),
}

# Element size of each buffer in bytes; the address field counts elements.
_BUFFER_ELEMENT_BYTES = {
    "act_buffer_bytes": 2,
    "wgt_buffer_bytes": 2,
    "acc_buffer_bytes": 4,
    "vec_buffer_bytes": 4,
}

_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "nm_patterns": tuple,
    "clock_hz": (int, float),
    "queue_depths": tuple,
    "energy_table": str,
    "operand_format": str,
    "accumulator_format": str,
}


def _check_type(key: str, value: Any) -> None:
    expected = _FIELD_TYPES.get(key, int)
    # bool is an int in Python; a configuration never means True for a size.
    if isinstance(value, bool) or not isinstance(value, expected):
        names = {int: "an integer", str: "a string", tuple: "a list"}
        want = names.get(expected, "a number") if isinstance(expected, type) else "a number"
        raise ConfigError(f"{key}: expected {want}, got {value!r}")


def _check_values(p: SATParams) -> None:
    for key, (rule, ok) in _INT_RULES.items():
        if not ok(getattr(p, key)):
            raise ConfigError(f"{key}: must be {rule}, got {getattr(p, key)!r}")
    if not p.name.strip():
        raise ConfigError("name: must be a non-empty string")
    if not 1e6 <= p.clock_hz <= 2e9:
        raise ConfigError(f"clock_hz: must be in [1e6, 2e9] Hz, got {p.clock_hz!r}")
    seen: set[tuple[int, int]] = set()
    for pattern in p.nm_patterns:
        n, m = pattern
        if not (m in (2, 4, 8, 16) and 1 <= n < m):
            raise ConfigError(
                f"nm_patterns: {n}:{m} is not a sparse N:M pattern "
                "(need 1 <= N < M and M in 2, 4, 8, 16; dense is implicit)"
            )
        if pattern in seen:
            raise ConfigError(f"nm_patterns: {n}:{m} is listed twice")
        seen.add(pattern)
    granule = p.buffer_banks * 64
    for key, elem_bytes in _BUFFER_ELEMENT_BYTES.items():
        size = getattr(p, key)
        if size <= 0 or size % granule:
            raise ConfigError(
                f"{key}: must be a positive multiple of buffer_banks * 64 = {granule} bytes, "
                f"got {size}"
            )
        if size // elem_bytes > 2**BUFFER_ADDR_BITS:
            raise ConfigError(
                f"{key}: at most 2**{BUFFER_ADDR_BITS} elements of {elem_bytes} bytes fit the "
                f"ISA's address field, got {size} bytes"
            )
    if len(p.queue_depths) != len(QUEUE_NAMES):
        raise ConfigError(f"queue_depths: need one depth per queue {QUEUE_NAMES}")
    for queue, depth in zip(QUEUE_NAMES, p.queue_depths, strict=True):
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 1024:
            raise ConfigError(
                f"queue_depths.{queue}: must be an integer in [1, 1024], got {depth!r}"
            )
    if not _TABLE_RE.match(p.energy_table):
        raise ConfigError(
            f"energy_table: must be a lower-case name like 'horowitz45', got {p.energy_table!r}"
        )
    if p.operand_format != "fp16":
        raise ConfigError(f"operand_format: only 'fp16' is supported, got {p.operand_format!r}")
    if p.accumulator_format != "fp32":
        raise ConfigError(
            f"accumulator_format: only 'fp32' is supported, got {p.accumulator_format!r}"
        )


# -- loading ---------------------------------------------------------------------------------


def presets_dir() -> Path:
    """Return the folder of the named presets (``configs/`` of the installed package)."""
    return Path(str(importlib.resources.files("nmsat") / "configs"))


def preset_names() -> tuple[str, ...]:
    """Return the names of the presets in ``configs/``, sorted."""
    return tuple(sorted(p.stem for p in presets_dir().glob("*.yaml")))


def _parse_nm_list(value: Any) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list):
        raise ConfigError(f"nm_patterns: expected a list of 'N:M' strings, got {value!r}")
    out = []
    for item in value:
        match = _NM_RE.match(str(item)) if isinstance(item, str) else None
        if match is None:
            raise ConfigError(f"nm_patterns: expected 'N:M' like '2:8', got {item!r}")
        out.append((int(match.group(1)), int(match.group(2))))
    return tuple(out)


def _parse_queue_depths(value: Any) -> tuple[int, ...]:
    if not isinstance(value, dict):
        raise ConfigError(
            f"queue_depths: expected a mapping of {', '.join(QUEUE_NAMES)} to depths, got {value!r}"
        )
    unknown = sorted(set(value) - set(QUEUE_NAMES))
    if unknown:
        raise ConfigError(f"queue_depths.{unknown[0]}: unknown queue; allowed: {QUEUE_NAMES}")
    missing = [q for q in QUEUE_NAMES if q not in value]
    if missing:
        raise ConfigError(f"queue_depths.{missing[0]}: missing")
    return tuple(value[q] for q in QUEUE_NAMES)


def _from_mapping(data: Mapping[str, Any]) -> SATParams:
    fields = {f.name: f for f in dataclasses.fields(SATParams)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key; allowed keys: {', '.join(fields)}")
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{missing[0]}: missing (required keys: {', '.join(required)})")
    kwargs = dict(data)
    kwargs["nm_patterns"] = _parse_nm_list(kwargs["nm_patterns"])
    kwargs["queue_depths"] = _parse_queue_depths(kwargs["queue_depths"])
    # PyYAML (YAML 1.1) reads 1e8 without an exponent sign as a string; accept it as a number.
    clock = kwargs["clock_hz"]
    if isinstance(clock, str):
        with contextlib.suppress(ValueError):
            kwargs["clock_hz"] = float(clock)
    return SATParams(**kwargs)


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected key=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"--set {override!r}: value is not a YAML scalar or list") from None
    if key.startswith("queue_depths."):
        queue = key.split(".", 1)[1]
        depths = dict(data.get("queue_depths") or {})
        if queue not in QUEUE_NAMES:
            raise ConfigError(f"--set {key}: unknown queue; allowed: {QUEUE_NAMES}")
        depths[queue] = value
        data["queue_depths"] = depths
    elif "." in key:
        raise ConfigError(f"--set {key}: only queue_depths.<queue> takes a dotted key")
    else:
        data[key] = value


def load_params(source: str | Path, overrides: Sequence[str] = ()) -> SATParams:
    """Load a configuration from a preset name or a YAML file, then apply overrides.

    Parameters
    ----------
    source
        A preset name from :func:`preset_names` (``"tiny"``, ``"vcu1525"``) or a path to a
        YAML file with the keys of :class:`SATParams`.
    overrides
        ``"key=value"`` strings (the CLI's ``--set``); the value is read as YAML, so
        ``nm_patterns=[2:4]`` and ``clock_hz=2.5e8`` work. ``queue_depths.load=4`` changes one
        queue.

    Raises
    ------
    ConfigError
        In one line naming the file or override, the key and the rule broken.
    """
    path, _ = resolve_data_file(source, presets_dir(), "config", "preset", preset_names())
    data = read_yaml_mapping(path)
    for override in overrides:
        try:
            _apply_override(data, override)
        except ConfigError as exc:
            raise ConfigError(str(exc)) from None
    try:
        return _from_mapping(data)
    except ConfigError as exc:
        where = f"{path.name} with --set {', '.join(overrides)}" if overrides else str(path)
        raise ConfigError(f"{where}: {exc}") from None
