"""Neware BTS 8 step files: a typed model, and XML in the instrument's own units.

A BTS step file is ``<root><config type="Step File" ...>`` with ``Head_Info``, a
whole-test protection and record interval (``Whole_Prt``), and ``Step_Info`` holding
``Step1..StepN``. Each step may carry, after its ``<Limit>``, its own ``<Protect>``
(voltage and current bounds judged during that step only) and ``<Record>`` (its own
record interval), as files saved by BTS 8 clients do. Current protection is signed:
``Upper`` bounds the charging current, ``Lower`` the discharging one (negative).
Inside the XML the instrument's units rule: voltage in 0.1 mV, current in mA, time in
ms, capacity in mAs. The model here uses readable units with the unit in every name,
and converts only at the XML boundary.

Files saved by the BTS client may declare ``encoding="GB2312"`` (and carry Chinese
remarks); :func:`parse_step_file` decodes the declared encoding itself, since the XML
parser underneath handles no multi-byte encoding but UTF-8/16.

The BTS server reads a step file from a path on its own disk when told to ``start``;
the simulated CT-4008 parses the same XML with :func:`parse_step_file`.
"""

from __future__ import annotations

import codecs
import enum
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import defusedxml.ElementTree as SafeET

from cellguard.drivers.errors import ConfigError

# Units inside a BTS step file.
_VOLT_UNITS_PER_V = 10_000.0  # 0.1 mV
_MS_PER_S = 1000.0
_MAS_PER_MAH = 3600.0

CLIENT_VERSION = "BTS Client 8.0.0.478(2024.06.24)(R3)"

# Sanity bounds on what a step file may hold. They are ours, far beyond any real cell
# test, and there so that a typo (a 300-digit time, 10^12 repeats) is refused with a
# message instead of being written as a number no instrument can hold.
MAX_TIME_S = 10 * 365 * 24 * 3600.0  # ten years
MAX_CURRENT_MA = 1_000_000.0  # 1 kA: beyond any cycler channel
MAX_VOLTAGE_V = 1000.0
MAX_CAPACITY_MAH = 1_000_000_000.0  # 1 MAh
MAX_CYCLE_COUNT = 65_535  # the largest count a 16-bit loop counter holds


class StepType(enum.IntEnum):
    """Step type codes as BTS 8 writes them in ``Step_Type``."""

    CC_CHARGE = 1
    CC_DISCHARGE = 2
    CV_CHARGE = 3
    REST = 4
    CYCLE = 5
    END = 6
    CCCV_CHARGE = 7
    PAUSE = 13  # the channel pauses here until the operator continues it
    CV_DISCHARGE = 19

    @property
    def wire_name(self) -> str:
        """The short name the server reports in ``step_type``/``steptype``."""
        return _WIRE_NAMES[self]


_WIRE_NAMES = {
    StepType.CC_CHARGE: "cc",
    StepType.CC_DISCHARGE: "dc",
    StepType.CV_CHARGE: "cv",
    StepType.REST: "rest",
    StepType.CYCLE: "cycle",
    StepType.END: "end",
    StepType.CCCV_CHARGE: "cccv",
    StepType.PAUSE: "pause",
    StepType.CV_DISCHARGE: "cvd",
}


@dataclass(frozen=True)
class Protection:
    """Protection bounds: the channel trips into ``protect`` beyond these.

    The whole test's (``StepFile.protection``) or one step's (``Step.protection``).
    Currents are signed, charge positive: the channel trips above
    ``current_upper_ma`` or below ``current_lower_ma`` (a discharge bound is negative,
    e.g. ``-0.432``).
    """

    voltage_upper_v: float | None = None
    voltage_lower_v: float | None = None
    current_upper_ma: float | None = None
    current_lower_ma: float | None = None
    delay_s: float | None = None

    @property
    def empty(self) -> bool:
        """True when no bound is set (nothing to write, nothing to judge)."""
        return all(getattr(self, name) is None for name in _PROTECTION_FIELDS)

    def check(self, where: str) -> None:
        """Refuse bounds the instrument could not hold, naming ``where`` and the field."""
        for name in _PROTECTION_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if not math.isfinite(value):
                raise ConfigError(field=f"{where}.{name}", problem="must be a finite number")
            bound = _BOUNDS[name]
            if abs(value) > bound.limit:
                raise ConfigError(field=f"{where}.{name}", problem=bound.problem(value))
        for low, high in (
            ("voltage_lower_v", "voltage_upper_v"),
            ("current_lower_ma", "current_upper_ma"),
        ):
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value is not None and high_value is not None and not low_value < high_value:
                raise ConfigError(
                    field=f"{where}.{low}",
                    problem=f"{low_value:g} must be below {high}={high_value:g}",
                )

    def tripped(self, voltage_v: float, current_a: float) -> bool:
        """Whether a sample at ``voltage_v`` and (signed) ``current_a`` trips these bounds."""
        current_ma = current_a * 1000.0
        upper_v, lower_v = self.voltage_upper_v, self.voltage_lower_v
        upper_ma, lower_ma = self.current_upper_ma, self.current_lower_ma
        return (
            (upper_v is not None and voltage_v >= upper_v)
            or (lower_v is not None and voltage_v <= lower_v)
            or (upper_ma is not None and current_ma > upper_ma)
            or (lower_ma is not None and current_ma < lower_ma)
        )


_PROTECTION_FIELDS = (
    "voltage_upper_v",
    "voltage_lower_v",
    "current_upper_ma",
    "current_lower_ma",
    "delay_s",
)


@dataclass(frozen=True)
class _Bound:
    limit: float
    unit: str

    def problem(self, value: float) -> str:
        return (
            f"{value:.6g} {self.unit} is beyond the bound; allowed: "
            f"at most {_fmt(self.limit)} {self.unit} in magnitude"
        )


_BOUNDS = {
    "time_s": _Bound(MAX_TIME_S, "s"),
    "delay_s": _Bound(MAX_TIME_S, "s"),
    "record_interval_s": _Bound(MAX_TIME_S, "s"),
    "capacity_mah": _Bound(MAX_CAPACITY_MAH, "mAh"),
    "current_ma": _Bound(MAX_CURRENT_MA, "mA"),
    "stop_current_ma": _Bound(MAX_CURRENT_MA, "mA"),
    "current_upper_ma": _Bound(MAX_CURRENT_MA, "mA"),
    "current_lower_ma": _Bound(MAX_CURRENT_MA, "mA"),
    "voltage_v": _Bound(MAX_VOLTAGE_V, "V"),
    "stop_voltage_v": _Bound(MAX_VOLTAGE_V, "V"),
    "voltage_upper_v": _Bound(MAX_VOLTAGE_V, "V"),
    "voltage_lower_v": _Bound(MAX_VOLTAGE_V, "V"),
}


@dataclass(frozen=True)
class Step:
    """One step. Limits that are ``None`` are absent from the file.

    ``current_ma`` is the set-point magnitude (always >= 0); the direction comes from
    the step type, as in BTS. A step ends at the first limit reached. ``protection``
    is judged during this step only (on top of the whole test's), and
    ``record_interval_s`` replaces the whole test's record interval during it. A PAUSE
    step holds the channel paused until the operator continues it.
    """

    step_type: StepType
    current_ma: float | None = None
    voltage_v: float | None = None  # CV set-point
    time_s: float | None = None
    capacity_mah: float | None = None
    stop_voltage_v: float | None = None
    stop_current_ma: float | None = None
    loop_start_step: int | None = None  # CYCLE: 1-based step to jump back to
    cycle_count: int | None = None  # CYCLE: how many times the loop body runs
    protection: Protection | None = None
    record_interval_s: float | None = None

    def __post_init__(self) -> None:
        # An empty <Protect> and none at all mean the same: keep one spelling, so a
        # parsed file compares equal to the model it was written from.
        if self.protection is not None and self.protection.empty:
            object.__setattr__(self, "protection", None)


@dataclass(frozen=True)
class StepFile:
    """A whole BTS step file: steps (1-based ids in order), protection, recording."""

    steps: tuple[Step, ...]
    protection: Protection = field(default_factory=Protection)
    record_interval_s: float | None = 60.0
    creator: str = "cellguard"
    remark: str = ""

    def __post_init__(self) -> None:
        validate_steps(self.steps)
        _check_interval(self.record_interval_s, "record_interval_s")
        # A non-finite limit would be rendered as "nan"/"inf", which the instrument
        # (and parse_step_file) refuses: catch it while the field can still be named.
        self.protection.check("protection")


def _check_interval(interval_s: float | None, where: str) -> None:
    if interval_s is None:
        return
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise ConfigError(field=where, problem="must be > 0 seconds")
    if interval_s > MAX_TIME_S:
        raise ConfigError(field=where, problem=_BOUNDS["record_interval_s"].problem(interval_s))


def check_step_bounds(step: Step, where: str) -> None:
    """Refuse numbers beyond what a step file may hold, naming ``where`` and the field
    and saying the bound (a typo like a 300-digit time, 10^12 repeats)."""
    for name in ("time_s", "capacity_mah", "current_ma"):
        value = getattr(step, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(field=f"{where}.{name}", problem="must be a finite number >= 0")
    for name in ("voltage_v", "stop_voltage_v", "stop_current_ma"):
        value = getattr(step, name)
        if value is not None and not math.isfinite(value):
            raise ConfigError(field=f"{where}.{name}", problem="must be a finite number")
    for name in (
        "time_s",
        "capacity_mah",
        "current_ma",
        "voltage_v",
        "stop_voltage_v",
        "stop_current_ma",
    ):
        value = getattr(step, name)
        if value is not None and abs(value) > _BOUNDS[name].limit:
            raise ConfigError(field=f"{where}.{name}", problem=_BOUNDS[name].problem(value))
    if step.cycle_count is not None and step.cycle_count > MAX_CYCLE_COUNT:
        raise ConfigError(
            field=f"{where}.cycle_count",
            problem=f"{step.cycle_count} is beyond the bound; allowed: 1 to {MAX_CYCLE_COUNT}",
        )
    if step.protection is not None:
        step.protection.check(f"{where}.protection")
    _check_interval(step.record_interval_s, f"{where}.record_interval_s")


def validate_steps(steps: tuple[Step, ...]) -> None:
    """Reject step lists the instrument could not run, naming the step and field."""
    if not steps:
        raise ConfigError(field="steps", problem="a step file needs at least one step")
    if steps[-1].step_type is not StepType.END:
        raise ConfigError(field=f"steps[{len(steps)}]", problem="the last step must be END")
    for index, step in enumerate(steps, start=1):
        where = f"step {index}"
        match step.step_type:
            case StepType.CC_CHARGE | StepType.CC_DISCHARGE:
                if step.current_ma is None or not step.current_ma > 0:
                    raise ConfigError(
                        field=f"{where}.current_ma", problem="a CC step needs a current > 0 mA"
                    )
                if (
                    step.time_s is None
                    and step.capacity_mah is None
                    and step.stop_voltage_v is None
                ):
                    raise ConfigError(
                        field=f"{where}",
                        problem="a CC step needs a time, capacity or cut-off voltage limit",
                    )
            case StepType.CV_CHARGE | StepType.CV_DISCHARGE | StepType.CCCV_CHARGE:
                if step.voltage_v is None:
                    raise ConfigError(
                        field=f"{where}.voltage_v", problem="a CV step needs a voltage set-point"
                    )
            case StepType.REST:
                if step.time_s is None or not step.time_s > 0:
                    raise ConfigError(
                        field=f"{where}.time_s", problem="a rest step needs a time > 0 s"
                    )
            case StepType.CYCLE:
                start = step.loop_start_step
                if start is None or not 1 <= start < index:
                    raise ConfigError(
                        field=f"{where}.loop_start_step",
                        problem=f"must be a step before this one (1..{index - 1})",
                    )
                if step.cycle_count is None or step.cycle_count < 1:
                    raise ConfigError(field=f"{where}.cycle_count", problem="must be >= 1")
            case StepType.END:
                if index != len(steps):
                    raise ConfigError(field=where, problem="END may only be the last step")
        if step.step_type in (StepType.CYCLE, StepType.END):
            # A control step takes no time: the file has no place for these, and a
            # limit written nowhere would be a limit dropped silently.
            for name in ("protection", "record_interval_s"):
                if getattr(step, name) is not None:
                    raise ConfigError(
                        field=f"{where}.{name}",
                        problem=f"a {step.step_type.name} step cannot hold one; "
                        "put it on the steps that run",
                    )
        check_step_bounds(step, where)


def _fmt(value: float) -> str:
    # BTS writes plain decimals; never scientific notation, no trailing noise.
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _value(parent: ET.Element, tag: str, value: float) -> None:
    ET.SubElement(parent, tag, Value=_fmt(value))


def _render_protection(parent: ET.Element, prot: Protection) -> None:
    """``<Protect><Main><Volt><Upper/><Lower/></Volt><Curr>...`` under ``parent``."""
    protect_main = ET.SubElement(ET.SubElement(parent, "Protect"), "Main")
    volt = ET.SubElement(protect_main, "Volt")
    if prot.voltage_upper_v is not None:
        _value(volt, "Upper", prot.voltage_upper_v * _VOLT_UNITS_PER_V)
    if prot.voltage_lower_v is not None:
        _value(volt, "Lower", prot.voltage_lower_v * _VOLT_UNITS_PER_V)
    curr = ET.SubElement(protect_main, "Curr")
    if prot.current_upper_ma is not None:
        _value(curr, "Upper", prot.current_upper_ma)
    if prot.current_lower_ma is not None:
        _value(curr, "Lower", prot.current_lower_ma)
    if prot.delay_s is not None:
        _value(protect_main, "Delay_Time", prot.delay_s * _MS_PER_S)


def _render_record(parent: ET.Element, interval_s: float | None) -> None:
    record_main = ET.SubElement(ET.SubElement(parent, "Record"), "Main")
    if interval_s is not None:
        _value(record_main, "Time", interval_s * _MS_PER_S)


def render_step_file(step_file: StepFile, *, date: str = "20260101000000", guid: str = "") -> str:
    """The step file as BTS 8 XML text (limits in 0.1 mV, mA, ms and mAs)."""
    root = ET.Element("root")
    config = ET.SubElement(
        root,
        "config",
        type="Step File",
        version="17",
        client_version=CLIENT_VERSION,
        date=date,
        Guid=guid,
    )
    head = ET.SubElement(config, "Head_Info")
    ET.SubElement(head, "Operate", Value="66")
    ET.SubElement(head, "Scale", Value="1")
    ET.SubElement(head, "Start_Step", Value="1", Hide_Ctrl_Step="0")
    ET.SubElement(head, "Creator", Value=step_file.creator)
    ET.SubElement(head, "Remark", Value=step_file.remark)
    ET.SubElement(head, "RateType", Value="103")

    whole = ET.SubElement(config, "Whole_Prt")
    _render_protection(whole, step_file.protection)
    _render_record(whole, step_file.record_interval_s)

    info = ET.SubElement(config, "Step_Info", Num=str(len(step_file.steps)))
    for step_id, step in enumerate(step_file.steps, start=1):
        element = ET.SubElement(
            info, f"Step{step_id}", Step_ID=str(step_id), Step_Type=str(int(step.step_type))
        )
        if step.step_type is StepType.END:
            continue
        limit = ET.SubElement(element, "Limit")
        if step.step_type is StepType.CYCLE:
            other = ET.SubElement(limit, "Other")
            ET.SubElement(other, "Start_Step", Value=str(step.loop_start_step))
            ET.SubElement(other, "Cycle_Count", Value=str(step.cycle_count))
            continue
        main = ET.SubElement(limit, "Main")
        if step.current_ma is not None:
            _value(main, "Curr", step.current_ma)
        if step.voltage_v is not None:
            _value(main, "Volt", step.voltage_v * _VOLT_UNITS_PER_V)
        if step.time_s is not None:
            _value(main, "Time", step.time_s * _MS_PER_S)
        if step.capacity_mah is not None:
            _value(main, "Cap", step.capacity_mah * _MAS_PER_MAH)
        if step.stop_voltage_v is not None:
            _value(main, "Stop_Volt", step.stop_voltage_v * _VOLT_UNITS_PER_V)
        if step.stop_current_ma is not None:
            _value(main, "Stop_Curr", step.stop_current_ma)
        if step.protection is not None:
            _render_protection(element, step.protection)
        if step.record_interval_s is not None:
            _render_record(element, step.record_interval_s)
    ET.SubElement(ET.SubElement(config, "SMBUS"), "SMBUS_Info", Num="0", AdjacentInterval="0")
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def _read(parent: ET.Element | None, path: str, scale: float, where: str) -> float | None:
    if parent is None:
        return None
    node = parent.find(path)
    if node is None:
        return None
    raw = node.get("Value")
    try:
        number = float(raw) if raw is not None else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(field=f"{where}/{path}", problem=f"Value must be a number, got {raw!r}")
    return number / scale


def _read_protection(parent: ET.Element, where: str) -> Protection:
    """The ``<Protect>`` under a step or ``Whole_Prt`` (empty when absent)."""
    protect = parent.find("Protect/Main")
    where = f"{where}/Protect"
    return Protection(
        voltage_upper_v=_read(protect, "Volt/Upper", _VOLT_UNITS_PER_V, where),
        voltage_lower_v=_read(protect, "Volt/Lower", _VOLT_UNITS_PER_V, where),
        current_upper_ma=_read(protect, "Curr/Upper", 1.0, where),
        current_lower_ma=_read(protect, "Curr/Lower", 1.0, where),
        delay_s=_read(protect, "Delay_Time", _MS_PER_S, where),
    )


def _read_int(parent: ET.Element | None, path: str, where: str) -> int | None:
    # int() would silently truncate "2.5" cycles to 2: refuse what is not whole.
    number = _read(parent, path, 1.0, where)
    if number is None:
        return None
    if not number.is_integer():
        raise ConfigError(
            field=f"{where}/{path}", problem=f"Value must be a whole number, got {number:g}"
        )
    return int(number)


_DECLARED_ENCODING = re.compile(rb"^<\?xml[^>]*?\sencoding\s*=\s*[\"']([\w.-]+)[\"']")
# GB2312 as declared by the BTS client: Windows writes its superset GBK (code page
# 936) under that name, and GB18030 decodes both; a strict GB2312 decoder would refuse
# the characters GBK added.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "cp936": "gb18030"}


def _decode(data: bytes) -> str:
    """The file's text, decoded as its BOM or XML declaration says (UTF-8 otherwise)."""
    for bom, bom_encoding in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            encoding = bom_encoding
            break
    else:
        declared = _DECLARED_ENCODING.match(data.lstrip())
        encoding = declared.group(1).decode("ascii") if declared else "utf-8"
    try:
        codec = codecs.lookup(_SUPERSETS.get(encoding.lower(), encoding)).name
    except LookupError:
        raise ConfigError(
            field="step file",
            problem=f"unknown encoding {encoding!r} in the XML declaration; allowed: "
            "UTF-8, UTF-16, GB2312/GBK or another encoding Python knows",
        ) from None
    try:
        return data.decode(codec)
    except UnicodeDecodeError as err:
        raise ConfigError(
            field="step file",
            problem=f"not valid {encoding} text at byte {err.start}: "
            "save it again from the BTS client, or declare the encoding it is in",
        ) from err


def parse_step_file(text: str | bytes) -> StepFile:
    """Parse BTS 8 step-file XML into a :class:`StepFile`.

    Bytes are decoded as the XML declaration says (a BTS client saves
    ``encoding="GB2312"``), text is taken as it is. Raises :class:`ConfigError` naming
    the element for anything the instrument would refuse: malformed XML, undecodable
    text, unknown step types, missing or non-numeric limits, numbers beyond the bounds.
    """
    if isinstance(text, bytes):
        text = _decode(text)
    try:
        root = SafeET.fromstring(text)
    except Exception as err:  # defusedxml raises several unrelated types
        raise ConfigError(field="step file", problem=f"not well-formed XML: {err}") from err
    config = root.find("config") if root.tag == "root" else None
    if config is None or config.get("type") != "Step File":
        raise ConfigError(field="step file", problem='expected <root><config type="Step File">')
    info = config.find("Step_Info")
    if info is None:
        raise ConfigError(field="step file/Step_Info", problem="missing")
    steps: list[Step] = []
    for index, element in enumerate(list(info), start=1):
        where = f"Step_Info/{element.tag}"
        try:
            step_type = StepType(int(element.get("Step_Type", "")))
        except ValueError as err:
            raise ConfigError(
                field=f"{where}.Step_Type",
                problem=f"unknown step type {element.get('Step_Type')!r}",
            ) from err
        if element.get("Step_ID") not in (None, str(index)):
            raise ConfigError(
                field=f"{where}.Step_ID", problem=f"must be {index} (steps are numbered in order)"
            )
        main = element.find("Limit/Main")
        other = element.find("Limit/Other")
        loop_start = _read_int(other, "Start_Step", where)
        cycles = _read_int(other, "Cycle_Count", where)
        steps.append(
            Step(
                step_type=step_type,
                current_ma=_read(main, "Curr", 1.0, where),
                voltage_v=_read(main, "Volt", _VOLT_UNITS_PER_V, where),
                time_s=_read(main, "Time", _MS_PER_S, where),
                capacity_mah=_read(main, "Cap", _MAS_PER_MAH, where),
                stop_voltage_v=_read(main, "Stop_Volt", _VOLT_UNITS_PER_V, where),
                stop_current_ma=_read(main, "Stop_Curr", 1.0, where),
                loop_start_step=loop_start,
                cycle_count=cycles,
                protection=_read_protection(element, where),
                record_interval_s=_read(
                    element.find("Record/Main"), "Time", _MS_PER_S, f"{where}/Record"
                ),
            )
        )
    whole = config.find("Whole_Prt")
    protection = _read_protection(whole, "Whole_Prt") if whole is not None else Protection()
    record = config.find("Whole_Prt/Record/Main")
    head = config.find("Head_Info")
    creator = head.find("Creator") if head is not None else None
    remark = head.find("Remark") if head is not None else None
    return StepFile(
        steps=tuple(steps),
        protection=protection,
        record_interval_s=_read(record, "Time", _MS_PER_S, "Whole_Prt/Record"),
        creator=(creator.get("Value") or "") if creator is not None else "",
        remark=(remark.get("Value") or "") if remark is not None else "",
    )
