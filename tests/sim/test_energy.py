"""Energy model: tables load and cover every counter, energy is linear, bad tables fail."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from nmsat.hw.errors import ConfigError
from nmsat.hw.params import load_params, preset_names
from nmsat.sim.energy import (
    FREE_EVENTS,
    PRICED_EVENTS,
    EnergyBreakdown,
    EnergyTable,
    energy_table_names,
    energy_tables_dir,
    estimate_energy,
    event_prices_pj,
    gflops_per_watt,
    load_energy_table,
)
from nmsat.sim.events import EVENT_FIELDS, Events

TINY = load_params("tiny")
BOARD = load_params("vcu1525")

# Counts up to 2**40 cover a full ResNet-50 training step (about 10**13 MACs would need more,
# but linearity does not depend on magnitude) while keeping float sums far from overflow.
events_strategy = st.builds(Events, **{f: st.integers(0, 2**40) for f in EVENT_FIELDS})


def _table_data(name: str = "horowitz45") -> dict[str, object]:
    data = yaml.safe_load((energy_tables_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# -- the shipped tables ----------------------------------------------------------------------


def test_shipped_tables_load() -> None:
    assert {"horowitz45", "fpga_vu9p_estimate"} <= set(energy_table_names())
    for name in energy_table_names():
        table = load_energy_table(name)
        assert table.name == name
        assert table.description and table.source and table.technology
    # The FPGA table says it is an estimate, in its name and its description.
    assert "ESTIMATE" in load_energy_table("fpga_vu9p_estimate").description


def test_every_preset_names_a_shipped_table() -> None:
    for preset in preset_names():
        assert load_params(preset).energy_table in energy_table_names()


def test_horowitz_figures() -> None:
    table = load_energy_table("horowitz45")
    # FP16 multiply 1.1 pJ + FP32 add 0.9 pJ; the N:M mux costs extra, never less.
    assert table.mac_dense_pj == pytest.approx(1.1 + 0.9)
    assert table.mac_sparse_pj > table.mac_dense_pj
    # 64-bit read of an 8 KB SRAM: 10 pJ; DRAM: 20 pJ per bit.
    assert table.sram_read_pj_per_byte * 8 == pytest.approx(10.0)
    assert table.sram_ref_bytes == 8192
    assert table.dram_read_pj_per_byte == pytest.approx(20.0 * 8)
    assert (table.wuve_fp32_add_pj, table.wuve_fp32_mul_pj) == (0.9, 3.7)


def test_table_round_trips_through_yaml(tmp_path: Path) -> None:
    for name in energy_table_names():
        table = load_energy_table(name)
        assert load_energy_table(_write(tmp_path, table.to_dict())) == table


# -- coverage of the Events record -----------------------------------------------------------


def test_every_counter_is_priced_or_declared_free() -> None:
    for field in EVENT_FIELDS:
        assert (field in PRICED_EVENTS) != (field in FREE_EVENTS), field
    assert set(PRICED_EVENTS) | set(FREE_EVENTS) == set(EVENT_FIELDS)
    components = {f.name for f in dataclasses.fields(EnergyBreakdown)}
    assert set(PRICED_EVENTS.values()) <= components


@pytest.mark.parametrize("table_name", ["horowitz45", "fpga_vu9p_estimate"])
@pytest.mark.parametrize("field", EVENT_FIELDS)
def test_one_event_costs_its_price(table_name: str, field: str) -> None:
    table = load_energy_table(table_name)
    result = estimate_energy(Events(**{field: 1}), 0, BOARD, table)
    if field in FREE_EVENTS:
        assert result.total_pj == 0.0
    else:
        price = event_prices_pj(table, BOARD)[field]
        assert price > 0.0
        assert result.total_pj == pytest.approx(price)
        assert getattr(result, PRICED_EVENTS[field]) == pytest.approx(price)


# -- the model -------------------------------------------------------------------------------


@given(events_strategy, events_strategy)
def test_dynamic_energy_is_linear(a: Events, b: Events) -> None:
    table = load_energy_table("horowitz45")
    whole = estimate_energy(a + b, 0, BOARD, table)
    parts = [estimate_energy(e, 0, BOARD, table) for e in (a, b)]
    for name in [*set(PRICED_EVENTS.values()), "dynamic_pj"]:
        assert getattr(whole, name) == pytest.approx(sum(getattr(p, name) for p in parts))
    doubled = estimate_energy(a + a, 0, BOARD, table)
    assert doubled.dynamic_pj == pytest.approx(2 * parts[0].dynamic_pj)


@given(events_strategy, st.integers(0, 2**48))
def test_static_energy_is_power_times_time(events: Events, cycles: int) -> None:
    table = load_energy_table("fpga_vu9p_estimate")
    result = estimate_energy(events, cycles, TINY, table)
    assert result.static_pj == table.static_power_w * (cycles / TINY.clock_hz) * 1e12
    # Static energy does not depend on the events, dynamic energy not on the time.
    assert result.static_pj == estimate_energy(Events(), cycles, TINY, table).total_pj
    assert result.dynamic_pj == estimate_energy(events, 0, TINY, table).total_pj


def test_hand_computed_example(tmp_path: Path) -> None:
    data = _table_data()
    data.update(
        name="hand",
        mac_dense_pj=2.0,
        mac_sparse_pj=3.0,
        sram_read_pj_per_byte=1.0,
        sram_write_pj_per_byte=2.0,
        sram_ref_bytes=512,
        sram_capacity_exponent=0.5,
        dram_read_pj_per_byte=100.0,
        dram_write_pj_per_byte=200.0,
        sore_compare_pj=0.5,
        wuve_element_pj=0.25,
        wuve_fp32_add_pj=1.0,
        wuve_fp32_mul_pj=4.0,
        instruction_pj=10.0,
        static_power_w=0.5,
    )
    table = load_energy_table(_write(tmp_path, data))
    events = Events(
        macs_dense=100,
        macs_sparse=40,
        macs_dense_equivalent=260,
        act_read_bytes=64,
        acc_write_bytes=16,
        dram_read_bytes=32,
        dram_write_bytes=8,
        sore_groups=3,
        sore_compares=12,
        wuve_elements=8,
        wuve_fp32_adds=8,
        wuve_fp32_muls=4,
        instructions=5,
        busy_compute_cycles=900,
    )
    # tiny: 4 banks; act and acc buffers of 8192 bytes -> 2048-byte banks, 4x the 512-byte
    # reference, so their accesses cost sqrt(4) = 2x the reference figures.
    result = estimate_energy(events, 1000, TINY, table)
    assert result.table == "hand"
    assert result.mac_dense_pj == 200.0
    assert result.mac_sparse_pj == 120.0
    assert result.sram_act_pj == 64 * 1.0 * 2
    assert result.sram_acc_pj == 16 * 2.0 * 2
    assert result.sram_wgt_pj == result.sram_idx_pj == result.sram_vec_pj == 0.0
    assert result.dram_pj == 32 * 100.0 + 8 * 200.0
    assert result.sore_pj == 6.0
    assert result.wuve_pj == 8 * 0.25 + 8 * 1.0 + 4 * 4.0
    assert result.control_pj == 50.0
    # 0.5 W for 1000 cycles at 100 MHz = 10 us: 5 uJ.
    assert TINY.clock_hz == 100e6
    assert result.static_pj == pytest.approx(5e6)
    assert result.dynamic_pj == pytest.approx(320 + 128 + 64 + 4800 + 6 + 26 + 50)
    assert result.total_pj == pytest.approx(result.dynamic_pj + 5e6)


def test_sram_energy_grows_with_bank_capacity() -> None:
    table = load_energy_table("horowitz45")
    # vcu1525: 4 MiB activation buffer in 32 banks of 128 KiB = 16x 8 KiB: sqrt(16) = 4x.
    assert event_prices_pj(table, BOARD)["act_read_bytes"] == pytest.approx(1.25 * 4)
    # The FPGA table prices one URAM access whatever the buffer size.
    fpga = load_energy_table("fpga_vu9p_estimate")
    for params in (TINY, BOARD):
        assert event_prices_pj(fpga, params)["act_read_bytes"] == fpga.sram_read_pj_per_byte


def test_breakdown_carries_the_table_name() -> None:
    for name in energy_table_names():
        result = estimate_energy(Events(macs_dense=1), 10, TINY, load_energy_table(name))
        assert result.table == name
        data = result.to_dict()
        assert data["table"] == name
        assert data["total_pj"] == result.total_pj
        assert data["sram_pj"] == result.sram_pj


@pytest.mark.parametrize("cycles", [-1, 1.5, True])
def test_bad_cycle_count(cycles: object) -> None:
    table = load_energy_table("horowitz45")
    with pytest.raises(ValueError, match="cycles"):
        estimate_energy(Events(), cycles, TINY, table)  # type: ignore[arg-type]


# -- bad tables ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"mac_triple_pj": 1.0}, ["mac_triple_pj", "unknown key", "mac_dense_pj"]),
        ({"dram_read_pj_per_byte": None}, ["dram_read_pj_per_byte", "non-negative"]),
        ({"sore_compare_pj": -0.1}, ["sore_compare_pj", "non-negative", "-0.1"]),
        ({"wuve_fp32_add_pj": "fast"}, ["wuve_fp32_add_pj", "'fast'"]),
        ({"instruction_pj": True}, ["instruction_pj", "True"]),
        ({"mac_dense_pj": float("nan")}, ["mac_dense_pj", "nan"]),
        ({"mac_sparse_pj": "inf"}, ["mac_sparse_pj", "inf"]),
        ({"mac_sparse_pj": [1.0]}, ["mac_sparse_pj", "[1.0]"]),
        ({"static_power_w": -1}, ["static_power_w", "watts"]),
        ({"sram_ref_bytes": 0}, ["sram_ref_bytes", "positive"]),
        ({"sram_capacity_exponent": 2}, ["sram_capacity_exponent", "[0, 1]"]),
        ({"name": "Horowitz 45"}, ["name", "'Horowitz 45'", "lower-case"]),
        ({"source": ""}, ["source", "non-empty"]),
        ({"description": 3}, ["description", "string"]),
    ],
)
def test_bad_values_name_the_key(
    tmp_path: Path, change: dict[str, object], words: list[str]
) -> None:
    data = _table_data()
    data.update(change)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_energy_table(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("key", ["name", "source", "mac_dense_pj", "static_power_w"])
def test_missing_key_is_named(tmp_path: Path, key: str) -> None:
    data = _table_data()
    del data[key]
    with pytest.raises(ConfigError, match=f"{key}: missing") as info:
        load_energy_table(_write(tmp_path, data))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: [unclosed\n", ["malformed YAML", "line"]),
        ("- a list\n- not a table\n", ["expected a mapping"]),
        ("", ["expected a mapping"]),
        ("1: 2\n", ["1", "keys must be strings"]),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_energy_table(path)
    assert "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_unknown_table_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="horowitz45") as info:
        load_energy_table("horowitz46")
    assert "'horowitz46'" in str(info.value) and "fpga_vu9p_estimate" in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_energy_table(tmp_path / "absent.yaml")


def test_direct_construction_validates() -> None:
    fields = load_energy_table("horowitz45").to_dict()
    fields["wuve_fp32_mul_pj"] = -3.7
    with pytest.raises(ConfigError, match="wuve_fp32_mul_pj"):
        EnergyTable(**fields)
    fields["wuve_fp32_mul_pj"] = 4
    assert EnergyTable(**fields).wuve_fp32_mul_pj == 4.0
    assert isinstance(EnergyTable(**fields).wuve_fp32_mul_pj, float)


def test_numbers_as_yaml_strings(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-1 (no decimal point) as a string; it is still a number of pJ.
    path = tmp_path / "table.yaml"
    text = yaml.safe_dump(_table_data()).replace("sore_compare_pj: 0.4", "sore_compare_pj: 1e-1")
    path.write_text(text, encoding="utf-8")
    assert math.isclose(load_energy_table(path).sore_compare_pj, 0.1)


def test_gflops_per_watt_counts_two_flops_per_mac() -> None:
    # 10^9 MACs = 2 * 10^9 FLOPs in 0.5 J (5 * 10^11 pJ): 4 GFLOPS/W.
    assert gflops_per_watt(10**9, 5e11) == pytest.approx(4.0, rel=1e-12)
    assert gflops_per_watt(3 * 10**9, 5e11) == pytest.approx(12.0, rel=1e-12)
    assert gflops_per_watt(10**9, 0.0) == 0.0
