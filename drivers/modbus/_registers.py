"""Register maps: what lives at which Modbus address, and in what units (sans-IO).

A Modbus device is a flat space of 16-bit words and single bits; what they mean is
written only in its manual. A :class:`RegisterMap` is that page of the manual as data:
each :class:`Register` has a name, an address in one of the four tables, a data type
(with the word order of 32-bit values), a linear scale (engineering value = raw ×
``scale`` + ``offset``, in ``unit``) and an access mode. Maps come from a plain mapping
as parsed from TOML (:meth:`RegisterMap.from_config`), are checked completely there,
and drive both the client and the simulators, so the two agree by construction.

Units. A register's *name* carries the unit the rest of cellguard sees (``voltage_v``,
``set_current_a``, ``stack_pressure_mpa``, ``chamber_temperature_c``); its ``unit`` is
what the device stores. Values cross the boundary converted explicitly (a device that
stores mA behind ``set_current_a`` is written and read in A), and a unit of a different
kind than the name's (``unit = "V"`` behind ``stack_pressure_mpa``) is refused. Names
without a unit suffix (``mode``, ``output``) hold dimensionless numbers.

Everything here is pure: words in, values out, and back. No I/O, no awaits.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from cellguard.drivers.errors import ConfigError

__all__ = [
    "MAX_READ_BITS",
    "MAX_READ_WORDS",
    "Access",
    "DataType",
    "ReadBlock",
    "Register",
    "RegisterMap",
    "Table",
    "WordOrder",
    "decode_block",
    "name_unit",
    "plan_reads",
    "plan_writes",
]

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["uint16", "int16", "uint32", "int32", "float32", "bool"]
Access = Literal["r", "rw"]
WordOrder = Literal["big", "little"]

TABLES: tuple[Table, ...] = get_args(Table)
DATA_TYPES: tuple[DataType, ...] = get_args(DataType)
BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
# The tables a master can write to; the others are read-only by the protocol itself.
WRITABLE_TABLES: frozenset[str] = frozenset({"coil", "holding"})

# The Modbus specification's limits on one read request (FC 3/4: 125 words, FC 1/2:
# 2000 bits); larger blocks are split.
MAX_READ_WORDS = 125
MAX_READ_BITS = 2000
_MAX_WRITE_WORDS = 123

_WORDS: dict[DataType, int] = {
    "uint16": 1,
    "int16": 1,
    "uint32": 2,
    "int32": 2,
    "float32": 2,
    "bool": 1,
}
_STRUCT: dict[DataType, str] = {
    "uint16": ">H",
    "int16": ">h",
    "uint32": ">I",
    "int32": ">i",
    "float32": ">f",
}
_INT_RANGE: dict[DataType, tuple[int, int]] = {
    "uint16": (0, 0xFFFF),
    "int16": (-0x8000, 0x7FFF),
    "uint32": (0, 0xFFFF_FFFF),
    "int32": (-0x8000_0000, 0x7FFF_FFFF),
    "bool": (0, 1),
}
_FLOAT32_MAX = 3.4028234663852886e38

# unit -> (kind, factor to the kind's base unit). Temperatures are °C only: an offset
# unit (K, °F) would need more than a factor, and no instrument here needs one.
UNITS: dict[str, tuple[str, float]] = {
    "": ("dimensionless", 1.0),
    "V": ("voltage", 1.0),
    "mV": ("voltage", 1e-3),
    "uV": ("voltage", 1e-6),
    "A": ("current", 1.0),
    "mA": ("current", 1e-3),
    "uA": ("current", 1e-6),
    "degC": ("temperature", 1.0),
    "Pa": ("pressure", 1.0),
    "kPa": ("pressure", 1e3),
    "MPa": ("pressure", 1e6),
    "bar": ("pressure", 1e5),
    "s": ("time", 1.0),
    "ms": ("time", 1e-3),
    "W": ("power", 1.0),
    "mW": ("power", 1e-3),
    "Ohm": ("resistance", 1.0),
}
# The unit a name's last ``_word`` declares (``voltage_v`` -> V, ``stack_pressure_mpa``
# -> MPa, ``chamber_temperature_c`` -> °C).
_SUFFIX_UNITS: dict[str, str] = {
    "v": "V",
    "mv": "mV",
    "uv": "uV",
    "a": "A",
    "ma": "mA",
    "ua": "uA",
    "c": "degC",
    "pa": "Pa",
    "kpa": "kPa",
    "mpa": "MPa",
    "bar": "bar",
    "s": "s",
    "ms": "ms",
    "w": "W",
    "mw": "mW",
    "ohm": "Ohm",
}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_KEYS = ("name", "address", "table", "type", "scale", "offset", "unit", "access", "word_order")


def name_unit(name: str) -> str:
    """The unit a register name declares by its suffix (``""`` for none)."""
    _, _, last = name.rpartition("_")
    return _SUFFIX_UNITS.get(last, "") if "_" in name else ""


@dataclass(frozen=True, slots=True)
class Register:
    """One named value of a device.

    ``scale``, ``offset`` and ``unit`` describe the device's side: engineering value in
    ``unit`` = raw × ``scale`` + ``offset``. The value the API sees is in the unit the
    name declares (:func:`name_unit`). Coils and discrete inputs are ``bool`` (1.0/0.0).
    """

    name: str
    address: int
    table: Table
    type: DataType
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    access: Access = "r"
    word_order: WordOrder = "big"

    @property
    def words(self) -> int:
        """How many 16-bit words (or bits, for coils and discrete inputs) it occupies."""
        return _WORDS[self.type]

    @property
    def end(self) -> int:
        """Last address it occupies."""
        return self.address + self.words - 1

    @property
    def api_unit(self) -> str:
        """The unit of the values :meth:`encode` takes and :meth:`decode` returns."""
        return name_unit(self.name)

    @property
    def _to_api(self) -> float:
        # Both units are of the same kind (checked when the map is built).
        return UNITS[self.unit][1] / UNITS[self.api_unit][1]

    @property
    def writable(self) -> bool:
        return self.access == "rw"

    def limits(self) -> tuple[float, float]:
        """Smallest and largest value it can hold, in API units."""
        if self.type == "float32":
            return (-_FLOAT32_MAX, _FLOAT32_MAX)
        lo, hi = _INT_RANGE[self.type]
        a = (lo * self.scale + self.offset) * self._to_api
        b = (hi * self.scale + self.offset) * self._to_api
        return (min(a, b), max(a, b))

    def resolution(self) -> float:
        """The step between two representable values, in API units (0 for float32)."""
        return 0.0 if self.type == "float32" else abs(self.scale * self._to_api)

    def encode(self, value: float) -> tuple[int, ...]:
        """``value`` (API units) -> the words to write; bits are 0/1.

        Raises :class:`ConfigError` naming the register and the allowed range when the
        value cannot be represented.
        """
        if not math.isfinite(value):
            raise ConfigError(field=self.name, problem=f"must be a finite number, got {value!r}")
        if self.type == "bool":
            if value not in (0, 1):
                raise ConfigError(field=self.name, problem=f"must be 0 or 1, got {value!r}")
            return (int(value),)
        raw = (value / self._to_api - self.offset) / self.scale
        if self.type == "float32":
            if abs(raw) > _FLOAT32_MAX:
                raise self._out_of_range(value)
            packed = struct.pack(">f", raw)
        else:
            lo, hi = _INT_RANGE[self.type]
            raw_int = round(raw)
            if not lo <= raw_int <= hi:
                raise self._out_of_range(value)
            packed = struct.pack(_STRUCT[self.type], raw_int)
        words = struct.unpack(f">{len(packed) // 2}H", packed)
        return words[::-1] if self.word_order == "little" else words

    def decode(self, words: Sequence[int]) -> float:
        """The words read (or bits, as 0/1) -> the value in API units."""
        if len(words) != self.words:
            msg = f"{self.name}: expected {self.words} word(s), got {len(words)}"
            raise ValueError(msg)
        if self.type == "bool":
            return 1.0 if words[0] else 0.0
        ordered = tuple(words[::-1]) if self.word_order == "little" else tuple(words)
        packed = struct.pack(f">{len(ordered)}H", *ordered)
        (raw,) = struct.unpack(_STRUCT[self.type], packed)
        return (float(raw) * self.scale + self.offset) * self._to_api

    def _out_of_range(self, value: float) -> ConfigError:
        lo, hi = self.limits()
        unit = self.api_unit or "(dimensionless)"
        return ConfigError(
            field=self.name,
            problem=f"{value!r} is outside what the register holds: {lo:.6g} to {hi:.6g} {unit}",
        )


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` words (or bits) of ``table`` from ``address``."""

    table: Table
    address: int
    count: int
    registers: tuple[Register, ...]


def plan_reads(registers: Iterable[Register]) -> list[ReadBlock]:
    """The fewest read requests that cover ``registers``.

    Only registers that touch are merged: reading across an address the device does
    not define is refused by most devices (illegal data address), so gaps split blocks.
    """
    blocks: list[ReadBlock] = []
    by_table: dict[Table, list[Register]] = {}
    for reg in registers:
        by_table.setdefault(reg.table, []).append(reg)
    for table in TABLES:
        regs = sorted(set(by_table.get(table, ())), key=lambda r: r.address)
        limit = MAX_READ_BITS if table in BIT_TABLES else MAX_READ_WORDS
        current: list[Register] = []
        for reg in regs:
            if current and (
                reg.address != current[-1].end + 1 or reg.end - current[0].address + 1 > limit
            ):
                blocks.append(_block(table, current))
                current = []
            current.append(reg)
        if current:
            blocks.append(_block(table, current))
    return blocks


def _block(table: Table, regs: list[Register]) -> ReadBlock:
    return ReadBlock(table, regs[0].address, regs[-1].end - regs[0].address + 1, tuple(regs))


def decode_block(block: ReadBlock, words: Sequence[int]) -> dict[str, float]:
    """The words (or bits) a block's read returned -> its registers' values."""
    if len(words) < block.count:
        msg = (
            f"expected {block.count} value(s) from {block.table} {block.address}, got {len(words)}"
        )
        raise ValueError(msg)
    out: dict[str, float] = {}
    for reg in block.registers:
        start = reg.address - block.address
        out[reg.name] = reg.decode(words[start : start + reg.words])
    return out


def plan_writes(values: Mapping[Register, float]) -> list[tuple[Register, ...]]:
    """Group writes into requests: touching holding registers go in one FC 16 request.

    The order of the groups follows the order of ``values`` (a setpoint first, the
    output last), so a caller can rely on what reaches the device first.
    """
    groups: list[list[Register]] = []
    for reg in values:
        last = groups[-1] if groups else None
        if (
            last is not None
            and reg.table == "holding"
            and last[-1].table == "holding"
            and reg.address == last[-1].end + 1
            and reg.end - last[0].address + 1 <= _MAX_WRITE_WORDS
        ):
            last.append(reg)
        else:
            groups.append([reg])
    return [tuple(g) for g in groups]


class RegisterMap:
    """A device's registers by name; checked for clashes when built."""

    def __init__(self, registers: Iterable[Register]) -> None:
        self._by_name: dict[str, Register] = {}
        for reg in registers:
            if reg.name in self._by_name:
                raise ConfigError(field=reg.name, problem="a second register has this name")
            for other in self._by_name.values():
                if _overlap(reg, other):
                    raise ConfigError(field=reg.name, problem=_overlap_problem(reg, other))
            self._by_name[reg.name] = reg

    @classmethod
    def from_config(cls, data: object, path: str = "registers") -> RegisterMap:
        """Build and check a map from a TOML-like list of tables.

        Every problem raises :class:`ConfigError` naming the exact key, e.g.
        ``instruments[0].registers[3].type``, and what is allowed there.
        """
        if not isinstance(data, Sequence) or isinstance(data, str | bytes):
            raise ConfigError(
                field=path,
                problem="must be a list of tables {name, address, table, type, ...}",
            )
        registers: list[Register] = []
        seen: dict[str, int] = {}
        for i, entry in enumerate(data):
            where = f"{path}[{i}]"
            reg = _register_from_config(entry, where)
            if reg.name in seen:
                raise ConfigError(
                    field=f"{where}.name",
                    problem=f"{reg.name!r} is already the name of {path}[{seen[reg.name]}]",
                )
            for j, other in enumerate(registers):
                if _overlap(reg, other):
                    raise ConfigError(
                        field=f"{where}.address",
                        problem=f"{_overlap_problem(reg, other)} ({path}[{j}])",
                    )
            seen[reg.name] = i
            registers.append(reg)
        return cls(registers)

    def to_config(self) -> list[dict[str, object]]:
        """The map as TOML-equivalent tables (what :meth:`from_config` reads back)."""
        out: list[dict[str, object]] = []
        for reg in self:
            entry: dict[str, object] = {
                "name": reg.name,
                "address": reg.address,
                "table": reg.table,
                "type": reg.type,
            }
            if reg.type != "bool":
                entry["scale"] = reg.scale
                if reg.offset:
                    entry["offset"] = reg.offset
                entry["unit"] = reg.unit
            entry["access"] = reg.access
            if reg.words == 2:
                entry["word_order"] = reg.word_order
            out.append(entry)
        return out

    def __getitem__(self, name: str) -> Register:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self._by_name)
            raise ConfigError(
                field=name, problem=f"no register of that name; this map has: {known}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Register]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def in_table(self, table: Table) -> list[Register]:
        """Registers of one table, by address."""
        return sorted((r for r in self if r.table == table), key=lambda r: r.address)

    def require(self, names: Iterable[str], *, what: str, path: str, writable: bool) -> None:
        """Check the map has each of ``names`` (writable ones if asked), for a role."""
        missing = [n for n in names if n not in self]
        if missing:
            raise ConfigError(
                field=path,
                problem=f"{what} needs register(s) named {', '.join(missing)}; "
                f"this map has: {', '.join(self.names) or 'none'}",
            )
        if writable:
            for n in names:
                if not self[n].writable:
                    raise ConfigError(
                        field=f"{path}.{n}",
                        problem=f"{what} writes {n}: it must be a coil or holding register "
                        'with access = "rw"',
                    )

    def __repr__(self) -> str:
        return f"RegisterMap({', '.join(self.names)})"


def _overlap(a: Register, b: Register) -> bool:
    return a.table == b.table and a.address <= b.end and b.address <= a.end


def _overlap_problem(reg: Register, other: Register) -> str:
    return (
        f"{reg.table} {reg.address}..{reg.end} overlaps register {other.name!r} "
        f"({other.table} {other.address}..{other.end})"
    )


def _register_from_config(entry: object, where: str) -> Register:
    if not isinstance(entry, Mapping):
        raise ConfigError(field=where, problem="must be a table {name, address, table, type, ...}")
    for key in entry:
        if key not in _KEYS:
            raise ConfigError(
                field=f"{where}.{key}", problem=f"unknown key; allowed: {', '.join(_KEYS)}"
            )
    for key in ("name", "address", "table"):
        if key not in entry:
            raise ConfigError(field=f"{where}.{key}", problem="is required")

    name = entry["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            field=f"{where}.name",
            problem=f"must be a lower-case identifier such as voltage_v, got {name!r}",
        )
    table = entry["table"]
    if table not in TABLES:
        raise ConfigError(
            field=f"{where}.table", problem=f"must be one of {', '.join(TABLES)}, got {table!r}"
        )
    is_bit = table in BIT_TABLES
    dtype = entry.get("type", "bool" if is_bit else None)
    if dtype is None:
        raise ConfigError(
            field=f"{where}.type", problem=f"is required: one of {', '.join(DATA_TYPES[:-1])}"
        )
    if is_bit and dtype != "bool":
        raise ConfigError(
            field=f"{where}.type", problem=f'a {table} holds one bit: type must be "bool"'
        )
    if not is_bit and dtype not in DATA_TYPES[:-1]:
        raise ConfigError(
            field=f"{where}.type",
            problem=f"must be one of {', '.join(DATA_TYPES[:-1])}, got {dtype!r}",
        )
    address = entry["address"]
    if not isinstance(address, int) or isinstance(address, bool) or not 0 <= address <= 0xFFFF:
        raise ConfigError(
            field=f"{where}.address", problem=f"must be a whole number 0..65535, got {address!r}"
        )
    if address + _WORDS[dtype] - 1 > 0xFFFF:
        raise ConfigError(
            field=f"{where}.address",
            problem=f"a {dtype} needs {_WORDS[dtype]} words: must be at most 65534",
        )
    scale = _number(entry, "scale", 1.0, where)
    offset = _number(entry, "offset", 0.0, where)
    if scale == 0:
        raise ConfigError(field=f"{where}.scale", problem="must not be 0")
    unit = entry.get("unit", "")
    if not isinstance(unit, str) or unit not in UNITS:
        allowed = ", ".join(u for u in UNITS if u)
        raise ConfigError(
            field=f"{where}.unit", problem=f'unknown unit {unit!r}; allowed: {allowed} or ""'
        )
    if is_bit and (scale != 1 or offset != 0 or unit):
        raise ConfigError(
            field=f"{where}.{'unit' if unit else 'scale' if scale != 1 else 'offset'}",
            problem=f"a {table} is a bit: no scale, offset or unit",
        )
    expected = name_unit(name)
    if UNITS[unit][0] != UNITS[expected][0]:
        said = f"{UNITS[expected][0]} in {expected}" if expected else "no unit (no unit suffix)"
        raise ConfigError(
            field=f"{where}.unit",
            problem=f"{unit or 'no unit'!s} is a {UNITS[unit][0]} but the name {name!r} says "
            f"{said}; use a {UNITS[expected][0]} unit or rename the register",
        )
    access = entry.get("access", "r")
    if access not in ("r", "rw"):
        raise ConfigError(field=f"{where}.access", problem=f'must be "r" or "rw", got {access!r}')
    if access == "rw" and table not in WRITABLE_TABLES:
        raise ConfigError(
            field=f"{where}.access",
            problem=f'a {table} cannot be written by Modbus: access must be "r"',
        )
    word_order = entry.get("word_order", "big")
    if word_order not in ("big", "little"):
        raise ConfigError(
            field=f"{where}.word_order",
            problem=f'must be "big" (high word first) or "little", got {word_order!r}',
        )
    return Register(
        name=name,
        address=address,
        table=table,
        type=dtype,
        scale=scale,
        offset=offset,
        unit=unit,
        access=access,
        word_order=word_order,
    )


def _number(entry: Mapping[str, object], key: str, default: float, where: str) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(field=f"{where}.{key}", problem=f"must be a finite number, got {value!r}")
    return float(value)
