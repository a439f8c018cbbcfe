"""Register maps: validation names the exact key; encode/decode round-trip (sans-IO)."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellguard.drivers.errors import ConfigError
from cellguard.drivers.modbus import (
    CHAMBER_MAP,
    CHAMBER_REGISTERS,
    CYCLER_MAP,
    CYCLER_REGISTERS,
    PRESSURE_MAP,
    PRESSURE_REGISTERS,
    Register,
    RegisterMap,
    plan_reads,
    plan_writes,
)

PATH = "instruments[0].registers"


def good_entries() -> list[dict[str, Any]]:
    return [
        {"name": "output", "address": 1, "table": "coil", "access": "rw"},
        {"name": "set_current_a", "address": 1, "table": "holding", "type": "float32",
         "unit": "mA", "access": "rw"},
        {"name": "voltage_v", "address": 1, "table": "input", "type": "int32", "scale": 1e-6,
         "unit": "V", "word_order": "little"},
        {"name": "stack_pressure_mpa", "address": 3, "table": "input", "type": "uint16",
         "scale": 10.0, "unit": "kPa"},
    ]  # fmt: skip


def test_a_good_map_builds_and_reads_back_as_the_same_tables() -> None:
    regs = RegisterMap.from_config(good_entries(), PATH)
    assert regs.names == ("output", "set_current_a", "voltage_v", "stack_pressure_mpa")
    again = RegisterMap.from_config(regs.to_config(), PATH)
    assert list(again) == list(regs)


@pytest.mark.parametrize(
    ("key", "value", "field", "words"),
    [
        ("type", "float64", "[3].type", "uint16, int16, uint32, int32, float32"),
        ("type", None, "[3].type", "is required"),
        ("table", "holdings", "[3].table", "holding, input, coil, discrete"),
        ("address", -1, "[3].address", "0..65535"),
        ("address", True, "[3].address", "whole number"),
        ("address", 1.5, "[3].address", "whole number"),
        ("scale", 0, "[3].scale", "must not be 0"),
        ("scale", "10", "[3].scale", "finite number"),
        ("scale", math.inf, "[3].scale", "finite number"),
        ("offset", math.nan, "[3].offset", "finite number"),
        ("unit", "furlong", "[3].unit", "unknown unit 'furlong'"),
        ("unit", "V", "[3].unit", "says pressure"),
        ("access", "w", "[3].access", '"r" or "rw"'),
        ("access", "rw", "[3].access", "cannot be written"),
        ("word_order", "middle", "[3].word_order", '"big"'),
        ("scaling", 2.0, "[3].scaling", "unknown key"),
        ("name", "Stack Pressure", "[3].name", "lower-case identifier"),
        ("name", "voltage_v", "[3].name", "already the name of instruments[0].registers[2]"),
        ("address", 2, "[3].address", "overlaps register 'voltage_v'"),
    ],
)
def test_each_bad_field_is_refused_naming_its_exact_key(
    key: str, value: object, field: str, words: str
) -> None:
    entries = good_entries()
    if value is None:
        del entries[3][key]
    else:
        entries[3][key] = value
    if key == "address" and value == 2:
        entries[3]["table"] = "input"  # voltage_v occupies input 1..2
    if key == "name" and value == "voltage_v":
        entries[3]["unit"] = "mV"  # a unit that name allows, so only the name is wrong
    with pytest.raises(ConfigError) as err:
        RegisterMap.from_config(entries, PATH)
    assert err.value.field == PATH + field
    assert words in err.value.problem


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"name": "x", "address": 5, "table": "coil", "type": "float32"}, "[4].type", "bool"),
        ({"name": "x", "address": 5, "table": "coil", "unit": "V"}, "[4].unit", "is a bit"),
        ({"name": "x", "table": "coil"}, "[4].address", "is required"),
        ({"name": "x", "address": 65535, "table": "holding", "type": "uint32"}, "[4].address",
         "at most 65534"),
        ({"name": "mode", "address": 9, "table": "holding", "type": "uint16", "unit": "V"},
         "[4].unit", "no unit suffix"),
        ("mode", "[4]", "must be a table"),
    ],
)  # fmt: skip
def test_a_bad_extra_entry_is_refused_naming_it(entry: object, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        RegisterMap.from_config([*good_entries(), entry], PATH)
    assert err.value.field == PATH + field
    assert words in err.value.problem


def test_registers_must_be_a_list() -> None:
    with pytest.raises(ConfigError) as err:
        RegisterMap.from_config({"name": "x"}, PATH)
    assert err.value.field == PATH


def test_an_unknown_name_lists_the_names_there_are() -> None:
    with pytest.raises(ConfigError, match="this map has: output, in_compliance"):
        CYCLER_MAP["voltage"]


def test_units_convert_explicitly_from_the_device_unit_to_the_name_unit() -> None:
    set_current = CYCLER_MAP["set_current_a"]  # stored as float32 mA
    words = set_current.encode(0.0004)
    assert struct.unpack(">f", struct.pack(">2H", *words))[0] == pytest.approx(0.4)
    assert set_current.decode(words) == pytest.approx(0.0004)
    pressure = PRESSURE_MAP["stack_pressure_mpa"]  # stored as float32 kPa
    assert pressure.decode(struct.unpack(">2H", struct.pack(">f", 5000.0))) == 5.0


def test_32_bit_word_order_little_puts_the_low_word_first() -> None:
    voltage = CYCLER_MAP["voltage_v"]  # int32 µV, low word first
    assert voltage.encode(70_000e-6) == (70_000 & 0xFFFF, 70_000 >> 16)
    assert voltage.decode((0xFFFF, 0xFFFF)) == pytest.approx(-1e-6)


def test_a_value_out_of_range_names_the_register_and_the_range() -> None:
    setpoint = CHAMBER_MAP["chamber_setpoint_c"]  # int16 in 0.1 °C
    with pytest.raises(ConfigError) as err:
        setpoint.encode(4000.0)
    assert err.value.field == "chamber_setpoint_c"
    assert "-3276.8 to 3276.7 degC" in err.value.problem
    with pytest.raises(ConfigError, match="finite"):
        setpoint.encode(math.nan)
    with pytest.raises(ConfigError, match="0 or 1"):
        CYCLER_MAP["output"].encode(0.5)


def test_built_in_maps_are_the_tables_they_show() -> None:
    for tables, regs in (
        (CYCLER_REGISTERS, CYCLER_MAP),
        (CHAMBER_REGISTERS, CHAMBER_MAP),
        (PRESSURE_REGISTERS, PRESSURE_MAP),
    ):
        assert list(RegisterMap.from_config(regs.to_config())) == list(regs)
        assert [t["name"] for t in tables] == list(regs.names)


def test_reads_are_planned_as_few_contiguous_blocks_split_at_gaps() -> None:
    blocks = plan_reads(CYCLER_MAP)
    assert [(b.table, b.address, b.count) for b in blocks] == [
        ("holding", 1, 9),
        ("input", 1, 4),
        ("coil", 1, 1),
        ("discrete", 1, 1),
    ]
    gap = RegisterMap(
        [
            Register("a_v", 1, "holding", "uint16", unit="V"),
            Register("b_v", 2, "holding", "uint16", unit="V"),
            Register("c_v", 4, "holding", "uint16", unit="V"),
        ]
    )
    assert [(b.address, b.count) for b in plan_reads(gap)] == [(1, 2), (4, 1)]


def test_writes_of_touching_holding_registers_go_in_one_request_in_order() -> None:
    regs = CYCLER_MAP
    groups = plan_writes(
        {regs["set_current_a"]: 0.0, regs["set_voltage_v"]: 0.0, regs["output"]: 1.0}
    )
    assert [[r.name for r in g] for g in groups] == [
        ["set_current_a", "set_voltage_v"],
        ["output"],
    ]


_INT_TYPES = {"uint16": (0, 0xFFFF), "int16": (-0x8000, 0x7FFF), "uint32": (0, 0xFFFFFFFF),
              "int32": (-0x80000000, 0x7FFFFFFF)}  # fmt: skip
_VOLT_UNITS = ("V", "mV", "uV")


@given(
    dtype=st.sampled_from(sorted(_INT_TYPES)),
    scale=st.sampled_from([1.0, 0.1, 0.001, 1e-6, 10.0, -0.5]),
    offset=st.sampled_from([0.0, -40.0, 2.5]),
    unit=st.sampled_from(_VOLT_UNITS),
    order=st.sampled_from(["big", "little"]),
    fraction=st.floats(0.0, 1.0),
)
def test_integer_registers_round_trip_within_their_resolution(
    dtype: str, scale: float, offset: float, unit: str, order: str, fraction: float
) -> None:
    reg = Register("x_v", 1, "holding", dtype, scale, offset, unit, "rw", order)  # type: ignore[arg-type]
    lo, hi = reg.limits()
    value = lo + (hi - lo) * fraction
    words = reg.encode(value)
    assert len(words) == reg.words
    assert all(0 <= w <= 0xFFFF for w in words)
    assert abs(reg.decode(words) - value) <= reg.resolution() / 2 + 1e-9 * max(1.0, abs(value))


@given(
    dtype=st.sampled_from(sorted(_INT_TYPES)),
    order=st.sampled_from(["big", "little"]),
    words=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
)
def test_any_words_decode_and_encode_back_to_the_same_words(
    dtype: str, order: str, words: list[int]
) -> None:
    reg = Register("count", 1, "input", dtype, word_order=order)  # type: ignore[arg-type]
    mine = tuple(words[: reg.words])
    assert reg.encode(reg.decode(mine)) == mine


@given(
    value=st.floats(-1e20, 1e20, allow_nan=False),
    scale=st.sampled_from([1.0, 1e-3, 0.5]),
    unit=st.sampled_from(_VOLT_UNITS),
    order=st.sampled_from(["big", "little"]),
)
def test_float32_registers_round_trip_within_float32_precision(
    value: float, scale: float, unit: str, order: str
) -> None:
    reg = Register("x_v", 1, "holding", "float32", scale, 0.0, unit, "rw", order)  # type: ignore[arg-type]
    assert math.isclose(reg.decode(reg.encode(value)), value, rel_tol=2e-7, abs_tol=1e-30)
