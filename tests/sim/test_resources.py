"""Resource estimate: the shipped table, known answers, monotonicity, bad tables fail."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from nmsat.hw.errors import ConfigError
from nmsat.hw.params import load_params
from nmsat.sim.resources import (
    DRIVERS,
    RESOURCE_KINDS,
    Resources,
    estimate_resources,
    load_resource_table,
    resource_table_names,
    resource_tables_dir,
)

TINY = load_params("tiny")
BOARD = load_params("vcu1525")
TABLE = load_resource_table()


def _table_data() -> dict[str, object]:
    path = resource_tables_dir() / "xcvu9p_estimate.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_shipped_table_has_the_paper_device_totals() -> None:
    # PAPER.md: XCVU9P 1,182,240 LUTs, 2,364,480 FFs, 6,840 DSP48E2, 2,160 BRAM36, 960 URAM.
    assert resource_table_names() == ("xcvu9p_estimate",)
    assert TABLE.device.name == "XCVU9P"
    assert TABLE.device.totals == Resources(
        dsp=6840, lut=1_182_240, ff=2_364_480, bram36=2160, uram=960
    )
    assert "estimate" in TABLE.description.lower()


@pytest.mark.parametrize("preset", ["tiny", "vcu1525"])
def test_presets_fit_the_device(preset: str) -> None:
    est = estimate_resources(load_params(preset))
    assert est.fits
    assert est.table == "xcvu9p_estimate"
    assert 0 < est.max_percent <= 100


def test_vcu1525_pe_matches_the_sizing_decision() -> None:
    # docs/decisions.md: about 500 LUTs and one DSP48E2 per PE, 1,024 PEs use about 45 % of
    # the LUTs and 15 % of the DSPs.
    pe = estimate_resources(BOARD).units["pe"]
    assert pe.dsp == BOARD.pe_count == 1024
    assert 450 <= pe.lut / BOARD.pe_count <= 550
    assert 40 <= 100 * pe.lut / TABLE.device.totals.lut <= 50


def test_buffer_mapping_known_answers() -> None:
    units = estimate_resources(BOARD).units
    # 4 MiB in 32 banks: 128 KiB per bank = 16384 words of 64 data bits = 4 URAM288 per bank.
    assert units["buffer_act"] == Resources(uram=4 * 32)
    assert units["buffer_wgt"] == Resources(uram=2 * 32)
    # 1 Mi 3-bit indices in 32 banks: 32768 per bank, 24 per 72-bit word = 1366 words (12 KiB,
    # below the 16 KiB URAM threshold) = 3 BRAM36 of 512 x 72 per bank.
    assert units["buffer_idx"] == Resources(bram36=3 * 32)
    # tiny: 8 KiB in 4 banks: 2 KiB per bank fits one BRAM36.
    assert estimate_resources(TINY).units["buffer_act"] == Resources(bram36=4)
    # The 16384 x 256-bit instruction memory: 4 URAMs wide, 4 deep.
    assert units["instruction_memory"] == Resources(uram=16)


def test_total_and_percent_add_up() -> None:
    est = estimate_resources(BOARD)
    for kind in RESOURCE_KINDS:
        assert getattr(est.total, kind) == sum(getattr(u, kind) for u in est.units.values())
        expected = 100 * getattr(est.total, kind) / getattr(TABLE.device.totals, kind)
        assert est.percent()[kind] == pytest.approx(expected)
    text = est.format_table()
    assert "ESTIMATE" in text and "xcvu9p_estimate" in text and "% of device" in text


_POW2 = st.sampled_from([2, 4, 8, 16, 32, 64, 128, 256])


@given(r1=_POW2, r2=_POW2, c1=_POW2, c2=_POW2)
def test_estimate_is_monotonic_in_array_size(r1: int, r2: int, c1: int, c2: int) -> None:
    r1, r2 = sorted((r1, r2))
    c1, c2 = sorted((c1, c2))
    small = estimate_resources(BOARD.replace(array_rows=r1, array_cols=c1), TABLE).total
    large = estimate_resources(BOARD.replace(array_rows=r2, array_cols=c2), TABLE).total
    for kind in RESOURCE_KINDS:
        assert getattr(small, kind) <= getattr(large, kind), kind
    if (r1, c1) != (r2, c2):
        assert small.lut < large.lut and small.dsp < large.dsp


@given(lanes=st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128]))
def test_estimate_grows_with_lanes(lanes: int) -> None:
    base = estimate_resources(BOARD.replace(sore_lanes=lanes, wuve_lanes=lanes), TABLE).total
    more = estimate_resources(
        BOARD.replace(sore_lanes=2 * lanes, wuve_lanes=2 * lanes), TABLE
    ).total
    assert more.lut > base.lut and more.dsp > base.dsp and more.ff > base.ff


def test_a_huge_array_does_not_fit() -> None:
    est = estimate_resources(BOARD.replace(array_rows=128, array_cols=128), TABLE)
    assert not est.fits
    assert est.percent()["lut"] > 100


def test_every_driver_evaluates_on_the_presets() -> None:
    for _name, (doc, fn) in DRIVERS.items():
        assert doc
        assert fn(TINY) >= 0 and fn(BOARD) >= 0
    assert DRIVERS["sore_compare_exchanges"][1](BOARD) == 24  # bitonic network on 8 inputs


# -- bad tables ------------------------------------------------------------------------------


def _bad(tmp_path: Path, change: dict[str, object], path: tuple[str, ...]) -> str:
    data = _table_data()
    node: object = data
    for key in path[:-1]:
        assert isinstance(node, dict)
        node = node[key]
    assert isinstance(node, dict)
    if change.get("delete"):
        del node[path[-1]]
    else:
        node[path[-1]] = change["value"]
    with pytest.raises(ConfigError) as info:
        load_resource_table(_write(tmp_path, data))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("path", "change", "needle"),
    [
        (("units", "pe", "lut", "bogus_driver"), {"value": 1}, "units.pe.lut.bogus_driver"),
        (("units", "pe", "count"), {"value": "nothing"}, "units.pe.count"),
        (("units", "pe", "lut", "base"), {"value": -1}, "must not be negative"),
        (("units", "pe", "colour"), {"value": 1}, "units.pe.colour: unknown key"),
        (("device", "lut"), {"delete": True}, "device.lut: missing"),
        (("device", "dsp"), {"value": 0}, "device.dsp: must be a positive integer"),
        (("memory", "bram36_shapes"), {"value": [[512]]}, "bram36_shapes"),
        (("name",), {"value": "Bad Name"}, "name: must be a lower-case name"),
        (("extra",), {"value": 1}, "table.extra: unknown key"),
    ],
)
def test_bad_tables_fail_in_one_line(
    tmp_path: Path, path: tuple[str, ...], change: dict[str, object], needle: str
) -> None:
    assert needle in _bad(tmp_path, change, path)


def test_unknown_table_name_lists_the_tables() -> None:
    with pytest.raises(ConfigError, match="xcvu9p_estimate"):
        load_resource_table("no_such_table")


def test_custom_table_changes_the_estimate(tmp_path: Path) -> None:
    data = _table_data()
    units = data["units"]
    assert isinstance(units, dict)
    units["pe"]["dsp"] = {"base": 2}
    table = load_resource_table(_write(tmp_path, data))
    assert estimate_resources(BOARD, table).units["pe"].dsp == 2 * BOARD.pe_count
