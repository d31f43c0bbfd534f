"""SATParams: presets load, every rule is enforced with a one-line message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nmsat.hw.errors import ConfigError
from nmsat.hw.params import QUEUE_NAMES, SATParams, load_params, preset_names


def test_presets_load_and_derive() -> None:
    assert {"tiny", "vcu1525"} <= set(preset_names())
    tiny = load_params("tiny")
    assert (tiny.array_rows, tiny.array_cols) == (4, 4)
    assert tiny.pe_count == 16
    assert tiny.m_max == 8 and tiny.index_bits == 3
    assert tiny.act_buffer_entries == tiny.act_buffer_bytes // 2
    assert tiny.acc_buffer_entries == tiny.acc_buffer_bytes // 4
    assert tiny.supports_nm(2, 8) and tiny.supports_nm(4, 4) and not tiny.supports_nm(1, 16)
    assert tiny.queue_depth("compute") == 4
    board = load_params("vcu1525")
    # 32 x 32 PEs at 200 MHz: 204.8 G dense MAC/s.
    assert board.peak_macs_per_s == pytest.approx(1024 * 200e6)
    assert board.dram_bandwidth_bytes_per_s == pytest.approx(256 * 200e6)


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    params = load_params("vcu1525")
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(params.to_dict()))
    assert load_params(path) == params


def test_frozen() -> None:
    params = load_params("tiny")
    with pytest.raises(AttributeError):
        params.array_rows = 8  # type: ignore[misc]


def test_overrides_are_validated() -> None:
    params = load_params("tiny", ["array_rows=8", "queue_depths.store=2", "clock_hz=2e8"])
    assert params.array_rows == 8
    assert params.queue_depth("store") == 2
    assert params.clock_hz == 2e8
    assert load_params("tiny", ['nm_patterns=["2:4"]']).nm_patterns == ((2, 4),)


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("array_rows=3", ["array_rows", "power of two"]),
        ("array_cols=512", ["array_cols", "[2, 256]"]),
        ("array_rows=true", ["array_rows", "integer"]),
        ("adder_latency=0", ["adder_latency", "[1, 16]"]),
        ("nm_patterns=['3:3']", ["nm_patterns", "3:3"]),
        ("nm_patterns=['2:6']", ["nm_patterns", "2:6"]),
        ("nm_patterns=['2:4', '2:4']", ["nm_patterns", "twice"]),
        ("nm_patterns=['two:four']", ["nm_patterns", "'N:M'"]),
        ("act_buffer_bytes=100", ["act_buffer_bytes", "multiple"]),
        ("acc_buffer_bytes=134217728", ["acc_buffer_bytes", "2**24"]),
        ("clock_hz=10", ["clock_hz", "[1e6, 2e9]"]),
        ("dram_bytes=1000", ["dram_bytes", "power of two"]),
        ("queue_depths.load=0", ["queue_depths.load", "[1, 1024]"]),
        ("queue_depths.fetch=3", ["fetch", "unknown queue"]),
        ("energy_table=Horowitz 45", ["energy_table"]),
        ("operand_format=bf16", ["operand_format", "fp16"]),
        ("colour=blue", ["colour", "unknown key"]),
        ("array_rows", ["key=value"]),
        ("name=", ["name"]),
    ],
)
def test_bad_values_name_key_and_rule(override: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_params("tiny", [override])
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_bad_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("array_rows: [1, 2\n")
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_params(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(listing)
    partial = tmp_path / "partial.yaml"
    partial.write_text("name: x\narray_rows: 4\n")
    with pytest.raises(ConfigError, match="array_cols: missing"):
        load_params(partial)
    with pytest.raises(ConfigError, match="no such preset"):
        load_params("no_such_preset")


def test_direct_construction_validates() -> None:
    good = load_params("tiny")
    with pytest.raises(ConfigError, match="interleave"):
        good.replace(interleave=17)
    with pytest.raises(ConfigError, match="queue_depths"):
        good.replace(queue_depths=(1, 2))
    assert isinstance(good.replace(array_cols=8), SATParams)
    assert len(QUEUE_NAMES) == len(good.queue_depths)
