"""The BTS 8 step-file codec: the model survives the XML, in the instrument's units."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellguard.drivers.errors import ConfigError
from cellguard.drivers.neware._stepfile import (
    Protection,
    Step,
    StepFile,
    StepType,
    parse_step_file,
    render_step_file,
)

# Values are drawn as the decimals the XML holds in the instrument's units (0.1 mV, mA
# with 6 decimals, ms, mAs with 3 decimals), then converted the way the parser does,
# so a round trip must reproduce every float exactly.
_volts = st.integers(-100_000, 100_000).map(lambda n: n / 10_000.0)
_milliamps = st.integers(1, 100_000_000).map(lambda n: n / 1e6)
_seconds = st.integers(1, 10**10).map(lambda n: n / 1000.0)
_milliamp_hours = st.integers(1, 10**9).map(lambda n: (n / 1000.0) / 3600.0)
_text = st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), max_size=30)


@st.composite
def _steps(draw: st.DrawFn) -> tuple[Step, ...]:
    body_types = draw(
        st.lists(
            st.sampled_from([t for t in StepType if t is not StepType.END]),
            min_size=0,
            max_size=8,
        )
    )
    steps: list[Step] = []
    for step_type in body_types:
        if step_type is StepType.CYCLE:
            if not steps:
                continue  # a loop needs an earlier step to jump back to
            start = draw(st.integers(1, len(steps)))
            count = draw(st.integers(1, 65_535))
            steps.append(Step(step_type, loop_start_step=start, cycle_count=count))
            continue
        optional: dict[str, Any] = {
            "current_ma": draw(st.none() | _milliamps),
            "voltage_v": draw(st.none() | _volts),
            "time_s": draw(st.none() | _seconds),
            "capacity_mah": draw(st.none() | _milliamp_hours),
            "stop_voltage_v": draw(st.none() | _volts),
            "stop_current_ma": draw(st.none() | _milliamps),
        }
        optional["protection"] = draw(st.none() | _protections())
        optional["record_interval_s"] = draw(st.none() | _seconds)
        if step_type in (StepType.CC_CHARGE, StepType.CC_DISCHARGE):
            optional["current_ma"] = draw(_milliamps)
            optional["time_s"] = draw(_seconds)
        elif step_type is StepType.REST:
            optional["time_s"] = draw(_seconds)
        else:
            optional["voltage_v"] = draw(_volts)
        steps.append(Step(step_type, **optional))
    return (*steps, Step(StepType.END))


_signed_milliamps = st.integers(-100_000_000, 100_000_000).map(lambda n: n / 1e6)


@st.composite
def _bounds(draw: st.DrawFn, values: st.SearchStrategy[float]) -> tuple[float | None, ...]:
    """(lower, upper): either may be absent; when both are there, lower < upper."""
    low, high = draw(st.none() | values), draw(st.none() | values)
    if low is not None and high is not None:
        if low == high:
            return (None, high)
        low, high = min(low, high), max(low, high)
    return (low, high)


@st.composite
def _protections(draw: st.DrawFn) -> Protection:
    # Signed, as BTS writes them: a discharge bound below zero is a normal lower bound.
    volt_low, volt_high = draw(_bounds(_volts))
    curr_low, curr_high = draw(_bounds(_signed_milliamps))
    return Protection(
        voltage_upper_v=volt_high,
        voltage_lower_v=volt_low,
        current_upper_ma=curr_high,
        current_lower_ma=curr_low,
        delay_s=draw(st.none() | _seconds),
    )


_step_files = st.builds(
    StepFile,
    steps=_steps(),
    protection=_protections(),
    record_interval_s=st.none() | _seconds,
    creator=_text,
    remark=_text,
)


@given(_step_files)
def test_render_then_parse_gives_back_the_same_step_file(step_file: StepFile) -> None:
    assert parse_step_file(render_step_file(step_file)) == step_file


@given(_step_files)
def test_rendered_xml_parses_from_utf8_bytes_as_from_text(step_file: StepFile) -> None:
    text = render_step_file(step_file)
    assert parse_step_file(text.encode("utf-8")) == parse_step_file(text)


def _standard_file() -> StepFile:
    return StepFile(
        steps=(
            Step(StepType.CC_CHARGE, current_ma=0.3927, time_s=3600.0, capacity_mah=0.3927),
            Step(StepType.CC_DISCHARGE, current_ma=0.3927, time_s=3600.0, capacity_mah=0.3927),
            Step(StepType.CYCLE, loop_start_step=1, cycle_count=1000),
            Step(StepType.END),
        ),
        protection=Protection(voltage_upper_v=5.0, voltage_lower_v=-5.0, current_upper_ma=0.432),
        record_interval_s=60.0,
    )


def _value(root: ET.Element, path: str) -> str | None:
    node = root.find(path)
    assert node is not None, f"missing {path}"
    return node.get("Value")


def test_xml_holds_current_in_ma_time_in_ms_voltage_in_tenth_mv_capacity_in_mas() -> None:
    root = ET.fromstring(render_step_file(_standard_file()))
    main = "config/Step_Info/Step1/Limit/Main"
    assert _value(root, f"{main}/Curr") == "0.3927"
    assert _value(root, f"{main}/Time") == "3600000"
    assert _value(root, f"{main}/Cap") == "1413.72"
    assert _value(root, "config/Whole_Prt/Protect/Main/Volt/Upper") == "50000"
    assert _value(root, "config/Whole_Prt/Protect/Main/Volt/Lower") == "-50000"
    assert _value(root, "config/Whole_Prt/Record/Main/Time") == "60000"


def test_xml_numbers_each_step_and_writes_the_loop_in_other() -> None:
    root = ET.fromstring(render_step_file(_standard_file()))
    info = root.find("config/Step_Info")
    assert info is not None
    assert info.get("Num") == "4"
    assert [(s.tag, s.get("Step_ID"), s.get("Step_Type")) for s in info] == [
        ("Step1", "1", "1"),
        ("Step2", "2", "2"),
        ("Step3", "3", "5"),
        ("Step4", "4", "6"),
    ]
    assert _value(root, "config/Step_Info/Step3/Limit/Other/Start_Step") == "1"
    assert _value(root, "config/Step_Info/Step3/Limit/Other/Cycle_Count") == "1000"


def test_xml_numbers_are_plain_decimals_never_scientific_notation() -> None:
    step_file = StepFile(
        steps=(Step(StepType.CC_CHARGE, current_ma=0.000001, time_s=1e7), Step(StepType.END))
    )
    root = ET.fromstring(render_step_file(step_file))
    assert _value(root, "config/Step_Info/Step1/Limit/Main/Curr") == "0.000001"
    assert _value(root, "config/Step_Info/Step1/Limit/Main/Time") == "10000000000"


def _xml(steps: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><root><config type="Step File">'
        f"<Step_Info>{steps}</Step_Info></config></root>"
    )


_REST = (
    '<Step{n} Step_ID="{n}" Step_Type="4">'
    '<Limit><Main><Time Value="1000"/></Main></Limit></Step{n}>'
)
_END = '<Step{n} Step_ID="{n}" Step_Type="6"/>'


def test_parse_accepts_a_minimal_hand_written_file() -> None:
    step_file = parse_step_file(_xml(_REST.format(n=1) + _END.format(n=2)))
    assert step_file.steps == (Step(StepType.REST, time_s=1.0), Step(StepType.END))


def test_parse_refuses_malformed_xml_naming_the_step_file() -> None:
    with pytest.raises(ConfigError, match="step file: not well-formed XML") as info:
        parse_step_file("<root><config type='Step File'><Step_Info>")
    assert info.value.field == "step file"


def test_parse_refuses_xml_that_is_not_a_step_file() -> None:
    with pytest.raises(ConfigError, match='step file: expected <root><config type="Step File">'):
        parse_step_file('<root><config type="Data"/></root>')


def test_parse_refuses_a_step_file_without_step_info() -> None:
    with pytest.raises(ConfigError, match="step file/Step_Info: missing"):
        parse_step_file('<root><config type="Step File"/></root>')


@pytest.mark.parametrize("step_type", ["42", "cc", ""])
def test_parse_refuses_an_unknown_step_type_naming_the_element(step_type: str) -> None:
    text = _xml(f'<Step1 Step_ID="1" Step_Type="{step_type}"/>' + _END.format(n=2))
    with pytest.raises(ConfigError, match=r"Step_Info/Step1\.Step_Type: unknown step type") as info:
        parse_step_file(text)
    assert info.value.field == "Step_Info/Step1.Step_Type"


@pytest.mark.parametrize("raw", ["abc", "", "nan", "inf", "1,5"])
def test_parse_refuses_a_non_numeric_value_naming_the_element(raw: str) -> None:
    text = render_step_file(_standard_file()).replace(
        'Curr Value="0.3927"', f'Curr Value="{raw}"', 1
    )
    with pytest.raises(ConfigError, match="Value must be a number") as info:
        parse_step_file(text)
    assert info.value.field == "Step_Info/Step1/Curr"


def test_parse_refuses_a_non_numeric_protection_naming_the_element() -> None:
    text = render_step_file(_standard_file()).replace('Upper Value="50000"', 'Upper Value="5 V"')
    with pytest.raises(ConfigError, match="Whole_Prt/Protect/Volt/Upper: Value must be a number"):
        parse_step_file(text)


def test_parse_refuses_a_fractional_cycle_count_instead_of_truncating_it() -> None:
    text = render_step_file(_standard_file()).replace(
        'Cycle_Count Value="1000"', 'Cycle_Count Value="2.5"'
    )
    with pytest.raises(ConfigError, match="Step_Info/Step3/Cycle_Count: Value must be a whole"):
        parse_step_file(text)


def test_parse_refuses_end_before_the_last_step_naming_that_step() -> None:
    text = _xml(_REST.format(n=1) + _END.format(n=2) + _REST.format(n=3) + _END.format(n=4))
    with pytest.raises(ConfigError, match="step 2: END may only be the last step"):
        parse_step_file(text)


def test_parse_refuses_a_file_whose_last_step_is_not_end() -> None:
    with pytest.raises(ConfigError, match=r"steps\[1\]: the last step must be END"):
        parse_step_file(_xml(_REST.format(n=1)))


def test_parse_refuses_a_loop_to_a_later_step_naming_the_cycle_step() -> None:
    cycle = (
        '<Step2 Step_ID="2" Step_Type="5"><Limit><Other><Start_Step Value="3"/>'
        '<Cycle_Count Value="10"/></Other></Limit></Step2>'
    )
    text = _xml(_REST.format(n=1) + cycle + _REST.format(n=3) + _END.format(n=4))
    with pytest.raises(
        ConfigError, match=r"step 2\.loop_start_step: must be a step before"
    ) as info:
        parse_step_file(text)
    assert info.value.field == "step 2.loop_start_step"


def test_parse_refuses_steps_numbered_out_of_order() -> None:
    text = _xml(_REST.format(n=1).replace('Step_ID="1"', 'Step_ID="7"') + _END.format(n=2))
    with pytest.raises(ConfigError, match=r"Step_Info/Step1\.Step_ID: must be 1"):
        parse_step_file(text)


def test_parse_refuses_entity_expansion_attacks() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><root>&b;</root>'
    )
    with pytest.raises(ConfigError, match="step file: not well-formed XML"):
        parse_step_file(bomb)


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ((), "steps"),
        (
            (Step(StepType.CC_CHARGE, current_ma=0.0, time_s=1.0), Step(StepType.END)),
            "step 1.current_ma",
        ),
        ((Step(StepType.CC_CHARGE, current_ma=1.0), Step(StepType.END)), "step 1"),
        ((Step(StepType.CV_CHARGE), Step(StepType.END)), "step 1.voltage_v"),
        ((Step(StepType.REST, time_s=0.0), Step(StepType.END)), "step 1.time_s"),
        ((Step(StepType.REST, time_s=float("inf")), Step(StepType.END)), "step 1.time_s"),
        (
            (
                Step(StepType.REST, time_s=1.0),
                Step(StepType.CYCLE, loop_start_step=1, cycle_count=0),
                Step(StepType.END),
            ),
            "step 2.cycle_count",
        ),
        (
            (Step(StepType.CV_CHARGE, voltage_v=float("nan")), Step(StepType.END)),
            "step 1.voltage_v",
        ),
    ],
)
def test_the_model_refuses_steps_the_instrument_could_not_run(
    steps: tuple[Step, ...], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        StepFile(steps=steps)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize("interval_s", [0.0, -1.0, float("inf"), float("nan")])
def test_the_model_refuses_a_record_interval_that_is_not_a_positive_time(interval_s: float) -> None:
    with pytest.raises(ConfigError, match="record_interval_s: must be > 0 seconds"):
        StepFile(steps=(Step(StepType.END),), record_interval_s=interval_s)


def test_the_model_refuses_a_non_finite_protection_it_could_not_write() -> None:
    with pytest.raises(ConfigError, match=r"protection\.voltage_upper_v: must be a finite number"):
        StepFile(steps=(Step(StepType.END),), protection=Protection(voltage_upper_v=float("inf")))


def test_step_types_have_the_short_names_the_server_reports() -> None:
    assert StepType.CC_CHARGE.wire_name == "cc"
    assert StepType.CC_DISCHARGE.wire_name == "dc"
    assert StepType.REST.wire_name == "rest"
    assert {t.wire_name for t in StepType} >= {"cv", "cycle", "end", "cccv", "cvd"}


# ---------------------------------------------------------------- files as BTS saves them

FIXTURES = Path(__file__).parents[1] / "fixtures" / "neware-stepfiles"
BTS_SAVED = FIXTURES / "li-li-pause-per-step-protect.xml"


def test_a_gb2312_file_as_a_bts_client_saves_it_is_read_with_its_chinese_text() -> None:
    """GB2312 declared and used (bytes beyond ASCII): decoded, not refused."""
    data = BTS_SAVED.read_bytes()
    assert data.startswith(b'<?xml version="1.0" encoding="GB2312"?>')
    step_file = parse_step_file(data)
    assert step_file.creator == "管理员"
    assert step_file.remark.startswith("锂金属对称电池 Li|Li，0.5 mA/cm2")
    assert [s.step_type for s in step_file.steps] == [
        StepType.REST,
        StepType.CC_CHARGE,
        StepType.PAUSE,
        StepType.CC_DISCHARGE,
        StepType.CYCLE,
        StepType.END,
    ]


def test_a_bts_saved_file_keeps_each_steps_protection_and_record_interval() -> None:
    step_file = parse_step_file(BTS_SAVED.read_bytes())
    rest, strip, pause, plate = step_file.steps[:4]
    assert strip.protection == Protection(
        voltage_upper_v=1.0, voltage_lower_v=-1.0, current_upper_ma=0.45, current_lower_ma=-0.45
    )
    assert strip.record_interval_s == 30.0
    assert plate.protection == Protection(voltage_upper_v=1.0, voltage_lower_v=-1.0)
    assert plate.record_interval_s == 10.0
    assert (rest.protection, rest.record_interval_s) == (None, None)
    assert (pause.protection, pause.time_s) == (None, None)
    # Whole-test current protection is signed: the discharge bound is negative.
    assert step_file.protection == Protection(
        voltage_upper_v=5.0,
        voltage_lower_v=-5.0,
        current_upper_ma=0.5,
        current_lower_ma=-0.5,
        delay_s=0.0,
    )
    assert step_file.record_interval_s == 60.0


def test_gbk_characters_in_a_file_declared_gb2312_are_decoded() -> None:
    """Windows writes GBK under the name GB2312; 堃 is GBK only."""
    text = _xml(_REST.format(n=1) + _END.format(n=2)).replace("UTF-8", "GB2312")
    text = text.replace(
        "<Step_Info>", '<Head_Info><Remark Value="王堃 测试"/></Head_Info><Step_Info>'
    )
    assert parse_step_file(text.encode("gbk")).remark == "王堃 测试"


def test_a_utf8_file_with_chinese_text_is_still_read_as_utf8() -> None:
    step_file = StepFile(steps=(Step(StepType.END),), remark="锂金属")
    assert parse_step_file(render_step_file(step_file).encode("utf-8")).remark == "锂金属"


def test_bytes_not_valid_in_the_declared_encoding_are_refused_naming_the_byte() -> None:
    data = _xml(_REST.format(n=1) + _END.format(n=2)).encode("ascii")
    data = data.replace(
        b"<Step_Info>", b'<Head_Info><Remark Value="\xff\xff"/></Head_Info><Step_Info>'
    )
    with pytest.raises(ConfigError, match=r"step file: not valid UTF-8 text at byte \d+"):
        parse_step_file(data)


def test_an_unknown_declared_encoding_is_refused_naming_it() -> None:
    data = _xml(_REST.format(n=1) + _END.format(n=2)).replace("UTF-8", "KLINGON-8")
    with pytest.raises(ConfigError, match="unknown encoding 'KLINGON-8'"):
        parse_step_file(data.encode("ascii"))


def test_step_type_13_is_a_pause_step_the_server_reports_as_pause() -> None:
    pause = '<Step1 Step_ID="1" Step_Type="13"/>'
    step_file = parse_step_file(_xml(pause + _END.format(n=2)))
    assert step_file.steps[0] == Step(StepType.PAUSE)
    assert StepType.PAUSE.wire_name == "pause"


def test_each_steps_protection_and_record_interval_are_written_after_its_limit() -> None:
    step_file = StepFile(
        steps=(
            Step(
                StepType.CC_DISCHARGE,
                current_ma=0.3927,
                time_s=3600.0,
                protection=Protection(
                    voltage_upper_v=0.5, voltage_lower_v=-0.5, current_lower_ma=-0.45
                ),
                record_interval_s=30.0,
            ),
            Step(StepType.END),
        ),
        protection=Protection(current_upper_ma=0.6, current_lower_ma=-0.6),
    )
    root = ET.fromstring(render_step_file(step_file))
    step = root.find("config/Step_Info/Step1")
    assert step is not None
    assert [child.tag for child in step] == ["Limit", "Protect", "Record"]
    assert _value(root, "config/Step_Info/Step1/Protect/Main/Volt/Upper") == "5000"
    assert _value(root, "config/Step_Info/Step1/Protect/Main/Volt/Lower") == "-5000"
    assert _value(root, "config/Step_Info/Step1/Protect/Main/Curr/Lower") == "-0.45"
    assert _value(root, "config/Step_Info/Step1/Record/Main/Time") == "30000"
    assert _value(root, "config/Whole_Prt/Protect/Main/Curr/Upper") == "0.6"
    assert _value(root, "config/Whole_Prt/Protect/Main/Curr/Lower") == "-0.6"


@pytest.mark.parametrize(
    ("step", "field", "bound"),
    [
        (Step(StepType.REST, time_s=float("1" * 300)), "step 1.time_s", "at most 315360000 s"),
        (
            Step(StepType.CC_CHARGE, current_ma=1e9, time_s=1.0),
            "step 1.current_ma",
            "at most 1000000 mA",
        ),
        (
            Step(StepType.CC_CHARGE, current_ma=1.0, capacity_mah=1e300),
            "step 1.capacity_mah",
            "at most 1000000000 mAh",
        ),
        (
            Step(StepType.REST, time_s=1.0, record_interval_s=1e12),
            "step 1.record_interval_s",
            "at most 315360000 s",
        ),
        (
            Step(StepType.REST, time_s=1.0, protection=Protection(voltage_upper_v=1e6)),
            "step 1.protection.voltage_upper_v",
            "at most 1000 V",
        ),
    ],
)
def test_absurd_numbers_are_refused_naming_the_field_and_the_bound(
    step: Step, field: str, bound: str
) -> None:
    with pytest.raises(ConfigError) as info:
        StepFile(steps=(step, Step(StepType.END)))
    assert info.value.field == field
    assert bound in info.value.problem


def test_absurd_repeat_counts_are_refused_naming_the_bound() -> None:
    steps = (
        Step(StepType.REST, time_s=1.0),
        Step(StepType.CYCLE, loop_start_step=1, cycle_count=10**12),
        Step(StepType.END),
    )
    with pytest.raises(ConfigError, match=r"step 2\.cycle_count: .*allowed: 1 to 65535"):
        StepFile(steps=steps)


def test_a_300_digit_time_in_a_file_is_refused_naming_the_step() -> None:
    rest = _REST.format(n=1).replace('"1000"', '"' + "9" * 300 + '"')
    with pytest.raises(ConfigError, match=r"step 1\.time_s: .* at most 315360000 s"):
        parse_step_file(_xml(rest + _END.format(n=2)))


def test_protection_bounds_the_wrong_way_round_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"protection\.current_lower_ma: 0\.5 must be below"):
        StepFile(
            steps=(Step(StepType.END),),
            protection=Protection(current_upper_ma=0.45, current_lower_ma=0.5),
        )


@pytest.mark.parametrize(
    "extra",
    [{"protection": Protection(voltage_upper_v=1.0)}, {"record_interval_s": 1.0}],
)
def test_a_loop_step_refuses_a_limit_the_file_has_no_place_for(extra: dict[str, Any]) -> None:
    """Written nowhere, it would be dropped silently."""
    steps = (
        Step(StepType.REST, time_s=1.0),
        Step(StepType.CYCLE, loop_start_step=1, cycle_count=2, **extra),
        Step(StepType.END),
    )
    with pytest.raises(ConfigError, match=r"step 2\.\w+: a CYCLE step cannot hold one"):
        StepFile(steps=steps)
