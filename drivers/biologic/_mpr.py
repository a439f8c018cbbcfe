"""Sans-IO parser of BioLogic EC-Lab ``.mpr`` files: bytes in, named numpy columns out.

Layout (facts learned from public readers' documentation, checked on real files):

- 52 bytes of file header: ``BIO-LOGIC MODULAR FILE\\x1a`` padded with spaces to 48
  bytes, then four zero bytes;
- then modules, each ``MODULE`` + a header + ``length`` bytes of body. The header holds
  a 10-byte short name (``VMP Set``, ``VMP data``, ``VMP LOG``, ``VMP loop``), a 25-byte
  long name and then either ``length, version, date`` (files of EC-Lab before 11.50) or,
  marked by ``0xFFFFFFFF`` where the length would be, ``max length, length, version,
  version, date`` (EC-Lab 11.50 and later); all integers are little-endian u32 and the
  date is 8 ASCII characters such as ``01/16/25``;
- the data module's body: row count (u32), column count (u8), one u16 id per column
  (little-endian in the old layout, big-endian in the new one), zero padding, then the
  rows, packed without gaps, at a fixed offset that depends on the module version.

Every inconsistency (a short file, a module running past the end, a row count the body
cannot hold, an unknown column id) raises :class:`MprFormatError` with one line: a
file loads completely or not at all.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cellguard.drivers.biologic._columns import (
    COLUMNS,
    FLAG_BITS,
    ID_174_WITH_EWE,
    TECHNIQUES,
)
from cellguard.drivers.errors import CellguardError

FILE_MAGIC = b"BIO-LOGIC MODULAR FILE\x1a"
FILE_HEADER = FILE_MAGIC.ljust(48) + b"\x00\x00\x00\x00"
MODULE_MAGIC = b"MODULE"
_NAMES_BYTES = 35  # short name (10) + long name (25)
_OLD_HEADER_BYTES = _NAMES_BYTES + 16  # length, version, date
_NEW_HEADER_BYTES = _NAMES_BYTES + 24  # max length, length, version, version, date
_NEW_LAYOUT_MARK = b"\xff\xff\xff\xff"

# Where the rows start in the data module's body, by (header layout, version). The old
# layout's version 3 added one byte (0x01) before the rows; the new layout keeps a
# 1007-byte preamble.
_ROWS_OFFSET = {("old", 2): 405, ("old", 3): 406, ("new", 10): 1007, ("new", 11): 1007}
_KNOWN_VERSIONS = "2 and 3 (EC-Lab before 11.50) and 10, 11 (EC-Lab 11.50 and later)"


class MprFormatError(CellguardError):
    """The bytes are not a readable EC-Lab ``.mpr`` file; the message is one line."""


@dataclass(frozen=True)
class Module:
    """One module of the container: its names, version, date and body."""

    short_name: str
    long_name: str
    layout: str  # "old" (EC-Lab before 11.50) or "new"
    version: int
    date: str
    body: memoryview  # a view into the file's bytes: a 100 MB data module is not copied


@dataclass(frozen=True)
class MprData:
    """The decoded contents of an ``.mpr`` file.

    ``columns`` maps EC-Lab's column labels (``time/s``, ``Ewe/V``, ``I/mA``, ``Ns``,
    ``cycle number``, ``freq/Hz``...) to arrays of one value per row, flags already split
    out of their shared byte (``mode``, ``ox/red``, ``error``...). ``technique`` is the
    settings module's technique (``GCPL``, ``PEIS``, ``OCV``, ``MB``...), ``None`` when the
    file has no settings module, or ``"0x.."`` for an id not known to cellguard.
    """

    modules: tuple[str, ...]
    technique: str | None
    data_version: int
    column_ids: tuple[int, ...]
    columns: dict[str, npt.NDArray[np.generic]]
    units: dict[str, str]
    n_rows: int


def parse_mpr(data: bytes) -> MprData:
    """Decode a whole ``.mpr`` file held in memory. Raises :class:`MprFormatError`."""
    modules = read_modules(data)
    names = [m.short_name for m in modules]
    data_modules = [m for m in modules if m.short_name == "VMP data"]
    if len(data_modules) != 1:
        found = ", ".join(repr(n) for n in names) or "none"
        count = "no" if not data_modules else f"{len(data_modules)}"
        msg = f"{count} 'VMP data' module(s), expected one; modules: {found}"
        raise MprFormatError(msg)
    settings = next((m for m in modules if m.short_name == "VMP Set"), None)
    technique = None
    if settings is not None and settings.body:
        code = settings.body[0]
        technique = TECHNIQUES.get(code, f"0x{code:02x}")
    rows, ids, units = read_data_module(data_modules[0])
    return MprData(
        modules=tuple(names),
        technique=technique,
        data_version=data_modules[0].version,
        column_ids=ids,
        columns=_split_flags(rows, ids),
        units=units,
        n_rows=len(rows),
    )


def read_modules(data: bytes) -> list[Module]:
    """Split the container into its modules, checking every header and length."""
    if len(data) < len(FILE_HEADER) or not data.startswith(FILE_MAGIC):
        msg = "not a BioLogic .mpr file: it does not start with the EC-Lab magic"
        raise MprFormatError(msg)
    if data[: len(FILE_HEADER)] != FILE_HEADER:
        msg = "damaged .mpr file header (bytes 23-51 are not EC-Lab's padding)"
        raise MprFormatError(msg)
    modules = []
    pos = len(FILE_HEADER)
    while pos < len(data):
        module, pos = _read_module(data, pos)
        modules.append(module)
    if not modules:
        msg = "the .mpr file holds no modules"
        raise MprFormatError(msg)
    return modules


def _read_module(data: bytes, pos: int) -> tuple[Module, int]:
    start = pos
    if data[pos : pos + len(MODULE_MAGIC)] != MODULE_MAGIC:
        found = data[pos : pos + len(MODULE_MAGIC)]
        msg = f"byte {pos}: expected a module ('MODULE'), found {found!r}"
        raise MprFormatError(msg)
    pos += len(MODULE_MAGIC)
    if data[pos + _NAMES_BYTES : pos + _NAMES_BYTES + 4] == _NEW_LAYOUT_MARK:
        layout, size, fmt = "new", _NEW_HEADER_BYTES, "<4I8s"
    else:
        layout, size, fmt = "old", _OLD_HEADER_BYTES, "<2I8s"
    header = data[pos : pos + size]
    if len(header) < size:
        msg = f"truncated: the module header at byte {start} is cut off"
        raise MprFormatError(msg)
    short_name = _ascii(header[:10], start, "short name")
    long_name = _ascii(header[10:_NAMES_BYTES], start, "long name")
    fields = struct.unpack(fmt, header[_NAMES_BYTES:])
    if layout == "new":
        _max_length, length, version_old, version_new, raw_date = fields
        # The new layout writes 0 in the old version field and the version in the next.
        version = version_old + version_new
    else:
        length, version, raw_date = fields
    date = _ascii(raw_date, start, "date")
    if not _is_date(date):
        msg = f"module {short_name!r} at byte {start}: {date!r} is not a date"
        raise MprFormatError(msg)
    pos += size
    body = memoryview(data)[pos : pos + length]
    if len(body) < length:
        msg = f"truncated: module {short_name!r} declares {length} bytes, {len(body)} remain"
        raise MprFormatError(msg)
    return Module(short_name, long_name, layout, version, date, body), pos + length


def read_data_module(
    module: Module,
) -> tuple[npt.NDArray[np.void], tuple[int, ...], dict[str, str]]:
    """The rows of the data module as a structured array, the column ids and units."""
    body = module.body
    offset = _ROWS_OFFSET.get((module.layout, module.version))
    if offset is None:
        msg = (
            f"data module version {module.version} is not supported; cellguard reads "
            f"versions {_KNOWN_VERSIONS}"
        )
        raise MprFormatError(msg)
    if len(body) < 5:
        msg = "truncated: the data module is shorter than its row count"
        raise MprFormatError(msg)
    n_rows, n_columns = struct.unpack_from("<IB", body)
    if n_columns == 0:
        msg = "the data module lists no columns"
        raise MprFormatError(msg)
    id_format = ("<" if module.layout == "old" else ">") + f"{n_columns}H"
    if 5 + 2 * n_columns > offset:
        msg = f"the data module lists {n_columns} columns, more than fit"
        raise MprFormatError(msg)
    ids = struct.unpack_from(id_format, body, 5)
    dtype, units = record_dtype(ids)
    have = len(body) - offset
    need = n_rows * dtype.itemsize
    if have != need:
        msg = (
            f"the data module declares {n_rows} rows of {dtype.itemsize} bytes "
            f"({need} bytes) but holds {max(have, 0)} bytes of rows"
        )
        raise MprFormatError(msg)
    rows = np.frombuffer(body, dtype=dtype, count=n_rows, offset=offset)
    return rows, ids, units


def record_dtype(ids: tuple[int, ...]) -> tuple[np.dtype[np.void], dict[str, str]]:
    """The numpy record type of one row, from the data module's column ids.

    All flag ids share one ``flags`` byte, placed where the first of them is listed. An id
    not in the table stops the read: its size is unknown, so no column after it can be
    found.
    """
    fields: list[tuple[str, str]] = []
    units: dict[str, str] = {}
    seen: set[int] = set()
    for index, column_id in enumerate(ids):
        if column_id in seen:
            msg = f"column id {column_id} is listed twice in the data module"
            raise MprFormatError(msg)
        seen.add(column_id)
        if column_id in FLAG_BITS:
            if "flags" not in units:
                fields.append(("flags", "u1"))
                units["flags"] = ""
            continue
        column = COLUMNS.get(column_id)
        if column is None:
            msg = (
                f"unknown column id {column_id} (column {index + 1} of {len(ids)}); "
                "its size is unknown, so the columns after it cannot be read"
            )
            raise MprFormatError(msg)
        if column_id == 174 and (6 in ids or 77 in ids):
            column = ID_174_WITH_EWE
        name = column.name
        copy = 2
        while name in units:
            name = f"{column.name} {copy}"
            copy += 1
        fields.append((name, column.dtype))
        units[name] = column.unit
    return np.dtype(fields), units


def _split_flags(
    rows: npt.NDArray[np.void], ids: tuple[int, ...]
) -> dict[str, npt.NDArray[np.generic]]:
    names = rows.dtype.names or ()
    columns: dict[str, npt.NDArray[np.generic]] = {
        name: rows[name] for name in names if name != "flags"
    }
    if "flags" in names:
        flags = rows["flags"]
        for column_id in ids:
            if column_id in FLAG_BITS:
                name, mask = FLAG_BITS[column_id]
                shift = (mask & -mask).bit_length() - 1
                columns[name] = (flags & mask) >> shift
    return columns


def _ascii(raw: bytes, start: int, what: str) -> str:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if not text.isprintable() or (not text.strip() and what != "long name"):
        msg = f"module at byte {start}: damaged {what} {raw!r}"
        raise MprFormatError(msg)
    return text.strip()


def _is_date(text: str) -> bool:
    # EC-Lab writes MM/DD/YY; some versions use '-' or '.' between the parts.
    return (
        len(text) == 8
        and text[2] == text[5]
        and text[2] in "/-."
        and all(text[i].isdigit() for i in (0, 1, 3, 4, 6, 7))
    )
