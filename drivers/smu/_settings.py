"""The simulated 2400's plain settings: one table of header → allowed values and *RST default.

Most of a 2400's command tree only stores a value and reads it back (a range, a delay,
a trigger count, which terminals are used); the simulator's cell does not depend on
them, but a host program that sets them must not meet an error, and one that reads them
back must get what a 2400 answers. Each :class:`Setting` says how an argument is checked
and written back, so a new one is one line here. The commands with an effect on the
cell or on readings (output, source, compliance, sense functions) are in
:mod:`._simulator`.

Arguments follow the 2400's SCPI: booleans are ``ON``/``OFF``/``1``/``0`` (any number:
non-zero is on); numbers are ``<NRf>`` or ``MINimum``/``MAXimum``/``DEFault``; words take
their short or long form in any case. A value outside the allowed span is
``-222,"Parameter data out of range"``, a word not allowed ``-224,"Illegal parameter
value"``, a missing one ``-109,"Missing parameter"``, a number that is not one
``-104,"Data type error"``. Replies: numbers as ``%+.6E`` (counts as ``%+d``), booleans
as ``1``/``0``, words in short form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cellguard.drivers.errors import CellguardError
from cellguard.drivers.smu._scpi import ErrorEntry, parse_number

__all__ = [
    "CURRENT_RANGES_A",
    "SETTINGS",
    "VOLTAGE_RANGES_V",
    "Refused",
    "Setting",
    "boolean",
    "format_value",
    "number",
]


class Refused(CellguardError):
    """A command the instrument parsed but will not execute: one error-queue entry."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f'{code},"{message}"')
        self.entry = ErrorEntry(code, message)


Parser = Callable[[str, str], str]
"""(argument, present reply) → the new reply; raises :class:`Refused`."""


def format_value(value: float) -> str:
    """A number as a 2400 answers a query: ``+1.000000E-03``."""
    return f"{value:+.6E}"


def _word(argument: str) -> str:
    word = argument.strip().upper()
    if not word:
        raise Refused(-109, "Missing parameter")
    return word


def boolean(argument: str) -> bool:
    """SCPI ``<b>``: ON/OFF, or a number (non-zero is on)."""
    word = _word(argument)
    if word == "ON":
        return True
    if word == "OFF":
        return False
    value = parse_number(word)
    if value is None:
        raise Refused(-224, "Illegal parameter value")
    return round(value) != 0


def number(argument: str, low: float, high: float, default: float) -> float:
    """SCPI ``<NRf>`` or MIN/MAX/DEF, within ``low..high``."""
    word = _word(argument)
    keyword = {"MIN": low, "MINIMUM": low, "MAX": high, "MAXIMUM": high}
    keyword |= {"DEF": default, "DEFAULT": default}
    if word in keyword:
        return keyword[word]
    value = parse_number(word)
    if value is None:
        raise Refused(-104, "Data type error")
    if not low <= value <= high:
        raise Refused(-222, "Parameter data out of range")
    return value


@dataclass(frozen=True, slots=True)
class Setting:
    """One stored setting: its reply after ``*RST`` and how an argument becomes a reply."""

    default: str
    parse: Parser
    also: tuple[str, ...] = ()
    """Headers that take the same value (the 2400's NPLC is one for all functions)."""
    fixes: tuple[str, ...] = ()
    """Boolean headers this one turns off (a fixed range turns auto-range off)."""


def _bool(default: bool) -> Setting:
    return Setting("1" if default else "0", lambda arg, _: "1" if boolean(arg) else "0")


def _number(low: float, high: float, default: float, **links: tuple[str, ...]) -> Setting:
    def parse(argument: str, _: str) -> str:
        return format_value(number(argument, low, high, default))

    return Setting(format_value(default), parse, **links)


def _integer(low: int, high: int, default: int) -> Setting:
    def parse(argument: str, _: str) -> str:
        return f"{round(number(argument, low, high, default)):+d}"

    return Setting(f"{default:+d}", parse)


def _short(keyword: str) -> str:
    return "".join(c for c in keyword if c.isupper() or c.isdigit())


def _choice(default: str, *keywords: str) -> Setting:
    """One of ``keywords`` (long form, short form in capitals), answered in short form."""
    words = {k.upper(): _short(k) for k in keywords} | {_short(k): _short(k) for k in keywords}

    def parse(argument: str, _: str) -> str:
        word = _word(argument).strip("\"'")
        # SENSe[1], CALCulate[1]: the suffix 1 is optional, as in headers.
        reply = words.get(word) or words.get(word.removesuffix("1"))
        if reply is None:
            raise Refused(-224, "Illegal parameter value")
        return reply

    return Setting(_short(default), parse)


def _one_of(default: int, *values: int) -> Setting:
    def parse(argument: str, _: str) -> str:
        value = number(argument, min(values), max(values), default)
        if value not in values:
            raise Refused(-224, "Illegal parameter value")
        return f"{round(value):+d}"

    return Setting(f"{default:+d}", parse)


# Full scales of the 2400's ranges: a value selects the lowest range that holds it.
CURRENT_RANGES_A = (1.05e-6, 1.05e-5, 1.05e-4, 1.05e-3, 1.05e-2, 1.05e-1, 1.05)
VOLTAGE_RANGES_V = (0.21, 2.1, 21.0, 210.0)
_RESISTANCE_RANGES_OHM = tuple(2.1 * 10.0**k for k in range(9))


def _range(ranges: tuple[float, ...], default: float, auto: str) -> Setting:
    def parse(argument: str, _: str) -> str:
        value = abs(number(argument, -ranges[-1], ranges[-1], default))
        # The full scales above are rounded; compare with a relative tolerance.
        chosen = next(r for r in ranges if value <= r * (1 + 1e-9))
        return format_value(chosen)

    return Setting(format_value(default), parse, fixes=(auto,))


def _auto_zero(argument: str, present: str) -> str:
    if _word(argument) == "ONCE":
        return present  # one zero measurement now; the setting stays
    return "1" if boolean(argument) else "0"


_NPLC = ("SENS:CURR:NPLC", "SENS:VOLT:NPLC", "SENS:RES:NPLC")


def _table() -> dict[str, Setting]:
    table: dict[str, Setting] = {
        # sense ranges and integration time
        "SENS:CURR:RANG": _range(CURRENT_RANGES_A, 1.05e-4, "SENS:CURR:RANG:AUTO"),
        "SENS:CURR:RANG:AUTO": _bool(True),
        "SENS:VOLT:RANG": _range(VOLTAGE_RANGES_V, 21.0, "SENS:VOLT:RANG:AUTO"),
        "SENS:VOLT:RANG:AUTO": _bool(True),
        "SENS:RES:RANG": _range(_RESISTANCE_RANGES_OHM, 2.1e5, "SENS:RES:RANG:AUTO"),
        "SENS:RES:RANG:AUTO": _bool(True),
        "SENS:RES:MODE": _choice("MANual", "MANual", "AUTO"),
        "SENS:AVER": _bool(False),
        "SENS:AVER:TCON": _choice("REPeat", "REPeat", "MOVing"),
        "SENS:AVER:COUN": _integer(1, 100, 10),
        # source ranges, delay, auto output-off, output-off state
        "SOUR:CURR:RANG": _range(CURRENT_RANGES_A, 1.05e-4, "SOUR:CURR:RANG:AUTO"),
        "SOUR:CURR:RANG:AUTO": _bool(True),
        "SOUR:VOLT:RANG": _range(VOLTAGE_RANGES_V, 21.0, "SOUR:VOLT:RANG:AUTO"),
        "SOUR:VOLT:RANG:AUTO": _bool(True),
        "SOUR:DEL": _number(0.0, 999.9999, 0.0, fixes=("SOUR:DEL:AUTO",)),
        "SOUR:DEL:AUTO": _bool(True),
        "SOUR:CLE:AUTO": _bool(False),
        "OUTP:SMOD": _choice("NORMal", "HIMPedance", "NORMal", "ZERO", "GUARd"),
        # trigger model
        "TRIG:COUN": _integer(1, 2500, 1),
        "ARM:COUN": _integer(1, 2500, 1),
        "TRIG:DEL": _number(0.0, 999.9999, 0.0),
        "TRIG:SOUR": _choice("IMMediate", "IMMediate", "TLINk"),
        "TRIG:OUTP": _choice("NONE", "SOURce", "DELay", "SENSe", "NONE"),
        "TRIG:ILIN": _integer(1, 4, 1),
        "TRIG:OLIN": _integer(1, 4, 2),
        "ARM:SOUR": _choice(
            "IMMediate", "IMMediate", "TIMer", "MANual", "BUS", "TLINk", "NSTest", "PSTest"
        ),
        "ARM:TIM": _number(0.001, 99999.99, 0.1),
        "ARM:OUTP": _choice("NONE", "TENTer", "TEXit", "NONE"),
        "ARM:ILIN": _integer(1, 4, 1),
        "ARM:OLIN": _integer(1, 4, 2),
        # reading buffer
        "TRAC:POIN": _integer(1, 2500, 100),
        "TRAC:FEED": _choice("SENSe", "SENSe", "CALCulate", "CALCulate2"),
        "TRAC:FEED:CONT": _choice("NEVer", "NEVer", "NEXT"),
        "FORM:DATA": _choice("ASCii", "ASCii"),  # binary transfers are not simulated
        # system, display, terminals
        "SYST:AZER": Setting("1", _auto_zero),
        "SYST:BEEP:STAT": _bool(True),
        "SYST:RSEN": _bool(False),
        "SYST:LFR": _one_of(60, 50, 60),
        "SYST:LFR:AUTO": _bool(True),
        "DISP:ENAB": _bool(True),
        "ROUT:TERM": _choice("FRONt", "FRONt", "REAR"),
    }
    for header in _NPLC:
        table[header] = _number(0.01, 10.0, 1.0, also=tuple(h for h in _NPLC if h != header))
    return table


SETTINGS: Mapping[str, Setting] = MappingProxyType(_table())
"""Every plain setting by canonical header (see :func:`~._scpi.parse_program_line`)."""


def defaults() -> dict[str, str]:
    """Every setting's reply after ``*RST``."""
    return {header: setting.default for header, setting in SETTINGS.items()}


def reply_number(reply: str) -> float:
    """The number a stored reply holds (the simulator reads trigger counts and delays)."""
    value = parse_number(reply)
    assert value is not None, reply
    assert math.isfinite(value), reply
    return value
