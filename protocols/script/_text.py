"""The text form: a TOML file with a ``[cell]`` and a ``[protocol]`` of step strings.

Steps read like PyBaMM experiment strings, with areal units::

    Rest for 10 min
    Strip at 0.5 mA/cm2 for 0.5 mAh/cm2
    Charge at C/2 until 4.2 V
    Discharge at 1 mA for 2 h or until 3 V
    Hold at 4.2 V until C/20
    Repeat steps 2-3 500 times
    Set temperature to 60 °C and wait until within 1 °C for at most 2 h

A Strip/Plate/Charge/Discharge, Hold or Rest step may end with its own safety window,
its own record interval and a conditional jump (host-driven runs only), in this order::

    Strip at 0.5 mA/cm2 for 0.5 mAh/cm2 within -1 V and 1 V
    Hold at 4.2 V until C/20 within 2 mA record every 1 s
    Strip at 0.5 mA/cm2 for 0.5 mAh/cm2 or until 1 V, then goto step 5 if voltage above 1 V
    Discharge at C/2 until 2.5 V, then goto step 1 if capacity reached 1.6 mAh

``within <V> and <V>`` is a voltage window, ``within <current>`` a |current| ceiling;
goto conditions are ``voltage above|below <V>``, ``current below <current>``,
``time reached <time>`` and ``capacity reached <capacity>``, judged on the step's
last sample; the target is ``step N`` or ``end``. In a temperature step ``C`` means °C
(``60 C``, ``60 °C``, ``60 degC``); elsewhere it is a C-rate.

Whole-test limits: ``Voltage between -5 V and 5 V``, ``Current below 1 mA``.
Every error quotes the step and the word at fault and says what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

from cellguard.drivers.errors import ConfigError
from cellguard.protocols.script._model import (
    CellSpec,
    Charge,
    Condition,
    ConditionKind,
    CurrentBelow,
    Discharge,
    Goto,
    HoldVoltage,
    Limit,
    Plate,
    Protocol,
    Quantity,
    Repeat,
    Rest,
    SetTemperature,
    Step,
    Strip,
    VoltageBetween,
)

# Written unit -> (canonical unit, factor to it).
_UNITS: dict[str, tuple[str, float]] = {
    **dict.fromkeys(("mA/cm2", "mA/cm²", "mA/cm^2", "mA cm-2", "mA cm⁻²"), ("mA/cm2", 1.0)),
    **dict.fromkeys(("mAh/cm2", "mAh/cm²", "mAh/cm^2", "mAh cm-2", "mAh cm⁻²"), ("mAh/cm2", 1.0)),
    "mA": ("mA", 1.0),
    "A": ("mA", 1000.0),
    "uA": ("mA", 0.001),
    "µA": ("mA", 0.001),
    "mAh": ("mAh", 1.0),
    "Ah": ("mAh", 1000.0),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), ("s", 1.0)),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), ("s", 60.0)),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), ("s", 3600.0)),
    "V": ("V", 1.0),
    "mV": ("V", 0.001),
    "C": ("C", 1.0),
    **dict.fromkeys(("°C", "degC", "℃"), ("°C", 1.0)),
}
# In a temperature step "C" is °C, not a C-rate.
_TEMPERATURE_UNITS = ("°C", "degC", "℃", "C")
_PLAIN_UNITS = ("mA/cm2", "mAh/cm2", "mA", "mAh", "A", "Ah", "s", "min", "h", "V", "mV", "°C")
_ALLOWED_UNITS = "mA/cm2, mA, A, C-rate (C/2, 0.5C), mAh/cm2, mAh, s, min, h, V, mV or °C"
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_ATTACHED = re.compile(rf"^({_NUMBER})([A-Za-zµ°℃].*)$")
_C_OVER = re.compile(r"^C/(\d+(?:\.\d*)?)$")
_VERBS = ("Rest", "Strip", "Plate", "Charge", "Discharge", "Hold", "Repeat", "Set")
_GOTO = re.compile(r"^(?P<step>.*?)(?:\s*,\s*|\s+)(?P<goto>then\b.*)$", re.IGNORECASE)
_CONDITIONS: dict[str, tuple[str, ...]] = {
    "voltage": ("above", "below"),
    "current": ("below",),
    "time": ("reached",),
    "capacity": ("reached",),
}
_CELL_KEYS = (
    "type",
    "area_cm2",
    "diameter_mm",
    "thick_li_um",
    "thin_li_um",
    "thick_li_mah_cm2",
    "thin_li_mah_cm2",
    "capacity_mah",
    "interphase",
)
_PROTOCOL_KEYS = ("name", "record_every", "limits", "steps")


class _Syntax(Exception):
    """A parse failure at one word; the caller adds which step or field it was."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _suggest(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _quantity(number: float, unit_text: str, written: str) -> Quantity:
    if unit_text not in _UNITS:
        msg = (
            f"unknown unit {unit_text!r} in {written!r}{_suggest(unit_text, _PLAIN_UNITS)}; "
            f"allowed: {_ALLOWED_UNITS}"
        )
        raise _Syntax(msg)
    unit, factor = _UNITS[unit_text]
    try:
        return Quantity(number * factor, unit)
    except ConfigError as err:
        msg = f"{written!r}: {err.problem}"
        raise _Syntax(msg) from err


def _c_rate(token: str) -> Quantity | None:
    """``C``, ``C/2``, ``0.5C`` as a C-rate, or None if ``token`` is none of those."""
    if token == "C":
        return Quantity(1.0, "C")
    over = _C_OVER.match(token)
    if over:
        divisor = float(over.group(1))
        if divisor == 0:
            msg = f"{token!r} divides by zero; write a C-rate as C/2 or 0.5C"
            raise _Syntax(msg)
        return Quantity(1.0 / divisor, "C")
    return None


class _Words:
    """The words of one step or limit, consumed left to right."""

    def __init__(self, text: str) -> None:
        self.words = text.split()
        self.pos = 0

    def peek(self) -> str | None:
        return self.words[self.pos] if self.pos < len(self.words) else None

    def next(self, expected: str) -> str:
        word = self.peek()
        if word is None:
            msg = f"expected {expected}, got the end of the step"
            raise _Syntax(msg)
        self.pos += 1
        return word

    def keyword(self, expected: str, after: str) -> None:
        word = self.peek()
        if word is None or word.lower() != expected:
            got = "the end of the step" if word is None else repr(word)
            msg = f"expected {expected!r} after {after}, got {got}"
            raise _Syntax(msg)
        self.pos += 1

    def quantity(self, what: str) -> Quantity:
        token = self.next(what)
        c_rate = _c_rate(token)
        if c_rate is not None:
            return c_rate
        attached = None if re.fullmatch(_NUMBER, token) else _ATTACHED.match(token)
        if attached:
            return _quantity(float(attached.group(1)), attached.group(2), token)
        if not re.fullmatch(_NUMBER, token):
            msg = f"expected {what} (a number and a unit), got {token!r}"
            raise _Syntax(msg)
        unit = self.peek()
        if unit is None:
            msg = f"expected a unit after {token!r}; allowed: {_ALLOWED_UNITS}"
            raise _Syntax(msg)
        self.pos += 1
        if unit in ("mA", "mAh") and self.peek() in ("cm-2", "cm⁻²"):
            unit = f"{unit} {self.next('cm-2')}"
        return _quantity(float(token), unit, f"{token} {unit}")

    def temperature(self, what: str) -> Quantity:
        token = self.next(what)
        attached = None if re.fullmatch(_NUMBER, token) else _ATTACHED.match(token)
        if attached:
            number, unit = attached.group(1), attached.group(2)
        elif re.fullmatch(_NUMBER, token):
            number = token
            unit_word = self.peek()
            if unit_word is None:
                msg = f"expected a unit after {token!r}; allowed: °C, degC or C"
                raise _Syntax(msg)
            self.pos += 1
            unit = unit_word
        else:
            msg = f"expected {what} (a number and °C), got {token!r}"
            raise _Syntax(msg)
        if unit not in _TEMPERATURE_UNITS:
            msg = f"expected a temperature in °C (°C, degC or C), got {unit!r} in {token!r}"
            raise _Syntax(msg)
        try:
            return Quantity(float(number), "°C")
        except ConfigError as err:
            msg = f"{number} {unit!r}: {err.problem}"
            raise _Syntax(msg) from err

    def end(self) -> None:
        word = self.peek()
        if word is not None:
            msg = f"unexpected {word!r} after the end of the step"
            raise _Syntax(msg)


def _current_step(verb: str, words: _Words, source: str) -> Step:
    words.keyword("at", f"{verb!r}")
    current = words.quantity("a current")
    ends: dict[str, Quantity] = {}
    after = "the current"
    keyword = "for"
    while True:
        word = words.peek()
        if ends and (word is None or word.lower() in _EXTRA_WORDS):
            break
        carried = False
        if ends and word is not None and word.lower() in ("or", "and"):
            words.pos += 1
            after = repr(word)
            word = words.peek()
            # "for 1 h or 0.5 mAh/cm2": the last keyword carries over to the quantity.
            carried = word is not None and word.lower() not in ("for", "until")
        if not carried:
            if word is None or word.lower() not in ("for", "until"):
                got = "the end of the step" if word is None else repr(word)
                msg = f"expected 'for' or 'until' after {after}, got {got}"
                raise _Syntax(msg)
            words.pos += 1
            keyword = word.lower()
        q = words.quantity(f"a {'time or capacity' if keyword == 'for' else 'voltage'}")
        if keyword == "for":
            if q.kind not in ("time", "capacity"):
                msg = (
                    f"'for' needs a time (s, min, h) or capacity (mAh/cm2, mAh), got {q} "
                    f"(a {q.kind}){'; write until ' + str(q) if q.kind == 'voltage' else ''}"
                )
                raise _Syntax(msg)
            slot = "duration" if q.kind == "time" else "capacity"
        else:
            slot = "until"
        if slot in ends:
            msg = f"a second {'for' if slot != 'until' else 'until'} {q}: give each once"
            raise _Syntax(msg)
        ends[slot] = q
        after = str(q)
    cls: dict[str, type[Strip] | type[Plate] | type[Charge] | type[Discharge]] = {
        "strip": Strip,
        "plate": Plate,
        "charge": Charge,
        "discharge": Discharge,
    }
    limits, record_every = _within(words)
    return cls[verb.lower()](
        current,
        duration=ends.get("duration"),
        capacity=ends.get("capacity"),
        until=ends.get("until"),
        source=source,
        limits=limits,
        record_every=record_every,
    )


_EXTRA_WORDS = ("within", "record")


def _within(words: _Words) -> tuple[tuple[Limit, ...], Quantity | None]:
    """``within <V> and <V>`` (a voltage window) and/or ``within <current>``, then
    ``record every <time>``, to the end: (the windows, the step's record interval)."""
    limits: list[Limit] = []
    record_every: Quantity | None = None
    while (word := words.peek()) is not None:
        if word.lower() == "record" and record_every is None:
            words.pos += 1
            words.keyword("every", "'record'")
            record_every = words.quantity("a time")
            if record_every.kind != "time":
                msg = f"'record every' needs a time (s, min, h), got {record_every}"
                raise _Syntax(msg)
            continue
        if word.lower() != "within" or record_every is not None:
            msg = (
                f"unexpected {word!r} after the end of the step; allowed there, in this "
                "order: 'within <V> and <V>', 'within <current>', 'record every <time>', "
                "', then goto step N if ...'"
            )
            raise _Syntax(msg)
        words.pos += 1
        first = words.quantity("a voltage or a current")
        if first.kind == "voltage":
            words.keyword("and", str(first))
            high = words.quantity("a voltage")
            if high.kind != "voltage":
                msg = f"expected a voltage after 'within {first} and', got {high} (a {high.kind})"
                raise _Syntax(msg)
            limits.append(VoltageBetween(first, high))
        elif first.kind == "current":
            limits.append(CurrentBelow(first))
        else:
            msg = (
                f"'within' needs a voltage window (within -1 V and 1 V) or a current "
                f"(within 2 mA), got {first} (a {first.kind})"
            )
            raise _Syntax(msg)
    return tuple(limits), record_every


def _goto(text: str) -> Goto:
    """``then goto step N if <condition>`` or ``then goto end if <condition>``."""
    words = _Words(text)
    words.keyword("then", "the step")
    words.keyword("goto", "'then'")
    target_word = words.next("'step N' or 'end'")
    target: int | Literal["end"]
    if target_word.lower() == "end":
        target = "end"
    elif target_word.lower() == "step":
        target = _whole(words.next("a step number"), "a step number")
    else:
        msg = f"expected 'step N' or 'end' after 'goto', got {target_word!r}"
        raise _Syntax(msg)
    words.keyword("if", f"goto {target_word}")
    what = words.next("a condition")
    if what.lower() == "step":  # "if step time reached 1 h" reads as well
        what = words.next("'time' or 'capacity'")
    comparisons = _CONDITIONS.get(what.lower())
    if comparisons is None:
        allowed = "voltage above|below <V>, current below <current>, time reached <time>, "
        allowed += "capacity reached <capacity>"
        msg = f"expected a condition ({allowed}), got {what!r}"
        raise _Syntax(msg)
    how = words.next(" or ".join(repr(c) for c in comparisons))
    if how.lower() not in comparisons:
        msg = f"expected {' or '.join(repr(c) for c in comparisons)} after {what!r}, got {how!r}"
        raise _Syntax(msg)
    threshold = words.quantity(f"a {what.lower()}")
    words.end()
    kind = cast(ConditionKind, f"{what.lower()} {how.lower()}")
    try:
        condition = Condition(kind, threshold)
        condition.check("goto")
    except ConfigError as err:
        raise _Syntax(err.problem) from None
    return Goto(target, condition)


def _set_temperature(words: _Words, source: str) -> SetTemperature:
    words.keyword("temperature", "'Set'")
    words.keyword("to", "'Set temperature'")
    setpoint = words.temperature("a temperature")
    within: Quantity | None = None
    timeout: Quantity | None = None
    if words.peek() is not None:
        words.keyword("and", str(setpoint))
        words.keyword("wait", "'and'")
        words.keyword("until", "'wait'")
        words.keyword("within", "'until'")
        within = words.temperature("a temperature band")
        if words.peek() is not None:
            words.keyword("for", str(within))
            words.keyword("at", "'for'")
            words.keyword("most", "'at'")
            timeout = words.quantity("a time")
            if timeout.kind != "time":
                msg = f"expected a time after 'for at most', got {timeout} (a {timeout.kind})"
                raise _Syntax(msg)
    words.end()
    return SetTemperature(setpoint, within=within, timeout=timeout, source=source)


def _hold(words: _Words, source: str) -> HoldVoltage:
    words.keyword("at", "'Hold'")
    voltage = words.quantity("a voltage")
    until: Quantity | None = None
    duration: Quantity | None = None
    after = "the voltage"
    while True:
        word = words.peek()
        if (until or duration) and (word is None or word.lower() in _EXTRA_WORDS):
            break
        if (until or duration) and word is not None and word.lower() in ("or", "and"):
            words.pos += 1
            word = words.peek()
        if word is None or word.lower() not in ("for", "until"):
            got = "the end of the step" if word is None else repr(word)
            msg = f"expected 'until <current>' or 'for <time>' after {after}, got {got}"
            raise _Syntax(msg)
        words.pos += 1
        if word.lower() == "until":
            until = words.quantity("a current")
            after = str(until)
        else:
            duration = words.quantity("a time")
            after = str(duration)
    limits, record_every = _within(words)
    return HoldVoltage(
        voltage,
        until_current=until,
        duration=duration,
        source=source,
        limits=limits,
        record_every=record_every,
    )


def _whole(word: str, what: str) -> int:
    if not word.isdigit():
        msg = f"expected {what} (a whole number), got {word!r}"
        raise _Syntax(msg)
    return int(word)


def _repeat(words: _Words, source: str) -> Repeat:
    which = words.next("'steps a-b'")
    if which.lower() not in ("step", "steps"):
        msg = f"expected 'steps' after 'Repeat', got {which!r}"
        raise _Syntax(msg)
    span = words.next("a step range like 2-3")
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", span)
    if match is None:
        msg = f"expected a step range like 2-3, got {span!r}"
        raise _Syntax(msg)
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else first
    times = _whole(words.next("how many times"), "how many times")
    word = words.peek()
    if word is None or word.lower() not in ("times", "time"):
        got = "the end of the step" if word is None else repr(word)
        msg = f"expected 'times' after {times}, got {got}"
        raise _Syntax(msg)
    words.pos += 1
    words.end()
    return Repeat(first, last, times, source=source)


def _step(words: _Words, source: str) -> Step:
    verb = words.next("a step")
    match verb.lower():
        case "rest":
            words.keyword("for", "'Rest'")
            duration = words.quantity("a time")
            limits, record_every = _within(words)
            step: Step = Rest(duration, source=source, limits=limits, record_every=record_every)
        case "set":
            step = _set_temperature(words, source)
        case "strip" | "plate" | "charge" | "discharge":
            step = _current_step(verb, words, source)
        case "hold":
            step = _hold(words, source)
        case "repeat":
            step = _repeat(words, source)
        case _:
            msg = f"expected one of {', '.join(_VERBS)}, got {verb!r}{_suggest(verb, _VERBS)}"
            raise _Syntax(msg)
    return step


def _with_goto(step: Step, goto: Goto) -> Step:
    if not isinstance(step, Strip | Plate | Charge | Discharge | HoldVoltage | Rest):
        msg = f"a {step.text.split()[0]} step cannot jump; 'then goto' belongs on a "
        msg += "Strip, Plate, Charge, Discharge, Hold or Rest step"
        raise _Syntax(msg)
    return dataclasses.replace(step, goto=goto)


def parse_step(text: str, number: int = 1) -> Step:
    """One step string as a model step; ``number`` (1-based) is for messages."""
    source = " ".join(text.split())
    try:
        split = _GOTO.match(source)
        if split is None:
            return _step(_Words(source), source)
        return _with_goto(_step(_Words(split.group("step")), source), _goto(split.group("goto")))
    except _Syntax as err:
        raise ConfigError(field=f"step {number} {source!r}", problem=err.problem) from None


def _limit(words: _Words) -> Limit:
    what = words.next("'Voltage' or 'Current'")
    if what.lower() == "voltage":
        words.keyword("between", "'Voltage'")
        low = words.quantity("a voltage")
        words.keyword("and", str(low))
        limit: Limit = VoltageBetween(low, words.quantity("a voltage"))
    elif what.lower() == "current":
        words.keyword("below", "'Current'")
        limit = CurrentBelow(words.quantity("a current"))
    else:
        msg = f"expected 'Voltage between <V> and <V>' or 'Current below <current>', got {what!r}"
        raise _Syntax(msg)
    words.end()
    return limit


def parse_limit(text: str, index: int = 1) -> Limit:
    """A whole-test limit string: ``Voltage between -5 V and 5 V`` or ``Current below 1 mA``."""
    source = " ".join(text.split())
    try:
        return _limit(_Words(source))
    except _Syntax as err:
        raise ConfigError(
            field=f"protocol.limits[{index}] {source!r}", problem=err.problem
        ) from None


def parse_quantity(text: str) -> Quantity:
    """``'10 s'``, ``'0.5 mA/cm2'``, ``'C/2'`` ... as a :class:`Quantity`."""
    words = _Words(text)
    try:
        q = words.quantity("a quantity")
        words.end()
    except _Syntax as err:
        raise ConfigError(field=repr(text), problem=err.problem) from None
    return q


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise ConfigError(
                field=f"{prefix}{key}",
                problem=f"unknown key{_suggest(key, allowed)}; allowed: {', '.join(allowed)}",
            )


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ConfigError(field=f"[{key}]", problem=f"required: a [{key}] table")
    return value


def _strings(value: object, field_name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(field=field_name, problem=f"must be a list of strings, got {value!r}")
    return list(value)


def parse_protocol_text(text: str) -> Protocol:
    """A protocol from the TOML text of a protocol file (see the module docstring)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(field="protocol file", problem=f"not valid TOML: {err}") from err
    _check_keys(data, ("cell", "protocol"), "")
    cell_table = _table(data, "cell")
    _check_keys(cell_table, _CELL_KEYS, "cell")
    if "type" not in cell_table:
        raise ConfigError(
            field="cell.type", problem="required: 'symmetric', 'asymmetric' or 'full'"
        )
    cell_args = {k: v for k, v in cell_table.items() if k != "type"}
    cell = CellSpec(cell_table["type"], **cell_args)

    table = _table(data, "protocol")
    _check_keys(table, _PROTOCOL_KEYS, "protocol")
    name = table.get("name")
    if not isinstance(name, str):
        raise ConfigError(field="protocol.name", problem=f"required: a name, got {name!r}")
    steps_text = _strings(table.get("steps"), "protocol.steps")
    steps = [parse_step(s, number) for number, s in enumerate(steps_text, start=1)]
    limits = [
        parse_limit(s, index)
        for index, s in enumerate(_strings(table.get("limits", []), "protocol.limits"), start=1)
    ]
    if "record_every" not in table:
        return Protocol(name, cell=cell, steps=steps, limits=limits)
    record = table["record_every"]
    if not isinstance(record, str):
        raise ConfigError(
            field="protocol.record_every", problem=f"must be a time like '10 s', got {record!r}"
        )
    try:
        record_every = parse_quantity(record)
    except ConfigError as err:
        raise ConfigError(field="protocol.record_every", problem=err.problem) from None
    return Protocol(name, cell=cell, steps=steps, limits=limits, record_every=record_every)


def load_protocol_file(path: str | Path) -> Protocol:
    """Read and parse a protocol file; :class:`ConfigError` names the file if unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(
            field="path", problem=f"cannot read {str(path)!r}: {err.strerror or err}"
        ) from err
    return parse_protocol_text(text)
