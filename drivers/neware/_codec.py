"""Sans-IO codec of the Neware BTS 8 API: bytes in, typed messages out, and back.

No sockets and no awaits here, so every rule is testable (and fuzzable) on plain
bytes. Requests and replies are ``<?xml ...?><bts version="1.0">...</bts>`` documents;
replies end with ``\\n\\n#\\r\\n``. Requests end with ``#\\r\\n`` (the API document) or,
as public clients send them, ``\\n\\n#\\r\\n``, ``</bts>#\\r\\n`` or ``</bts>\\r\\n#\\r\\n``: a
real server answers all of them, and so does :class:`RequestSplitter`. Replies are
encoded the way the real server writes them, quirks included: CRLF line ends,
two-space indentation, the misspelt ``donwload_resp`` and ``donwloadlog_resp``. The
decoder accepts both spellings and never trusts ``count`` attributes (the real server
gets them wrong).
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import TypeVar, assert_never, cast
from xml.etree.ElementTree import Element, XMLParser
from xml.sax.saxutils import escape, quoteattr

from cellguard.drivers.errors import ProtocolViolation
from cellguard.drivers.neware._messages import (
    ChannelAddress,
    ChannelId,
    ChannelInfo,
    ChannelStatus,
    ClearFlag,
    CommandReply,
    CommandResult,
    Connect,
    ConnectReply,
    Continue,
    DataCount,
    DevInfoReply,
    Download,
    DownloadLog,
    DownloadLogReply,
    DownloadRecord,
    DownloadReply,
    DownloadStepLayer,
    GetChlStatus,
    GetDevInfo,
    Inquire,
    InquireDf,
    InquireDfReply,
    InquireRecord,
    InquireReply,
    Light,
    LogRecord,
    OtherCommand,
    OtherReply,
    Pause,
    Reply,
    Request,
    SkippedRecord,
    Start,
    StartItem,
    StatusReply,
    StepLayerRecord,
    StepLayerReply,
    Stop,
)

TERMINATOR = b"\n\n#\r\n"
# The end of a request as the BTS API document (v1.19) gives it; every request
# framing a real server accepts ends with it.
REQUEST_END = b"#\r\n"
_BTS_CLOSE = b"</bts>"
# A download of 1000 records is ~250 kB; anything this large without a terminator is
# not a BTS frame, and buffering it further would only eat memory.
DEFAULT_MAX_FRAME_BYTES = 32 * 1024 * 1024

_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>'
_REQUEST_HEAD = '<?xml version="1.0" encoding="UTF-8" ?><bts version="1.0">'
_WALL_FORMAT = "%Y-%m-%d %H:%M:%S"
# At most 18 digits per part, so int() never meets a 5000-digit string.
_DEV_RE = re.compile(r"[0-9]{1,18}(?:-[0-9]{1,18}){3,}")

# Reply command names, as the real server spells them, and the accepted aliases.
_REPLY_NAMES: dict[str, str] = {
    "connect": "connect_resp",
    "getdevinfo": "getdevinfo_resp",
    "getchlstatus": "getchlstatus_resp",
    "inquire": "inquire_resp",
    "inquiredf": "inquiredf_resp",
    "start": "start_resp",
    "stop": "stop_resp",
    "clearflag": "clearflag_resp",
    "light": "light_resp",
    "setpause": "setpause_resp",
    "continue": "continue_resp",
    "download": "donwload_resp",
    "downloadlog": "donwloadlog_resp",
    "downloadStepLayer": "downloadStepLayer_resp",
}
_REPLY_ALIASES = {"download_resp": "donwload_resp", "downloadlog_resp": "donwloadlog_resp"}


class FrameSplitter:
    """Cuts a byte stream into frames at ``\\n\\n#\\r\\n``.

    Handles partial frames (kept until the rest arrives) and several frames in one
    read. A stream that grows past ``max_frame_bytes`` without a terminator raises
    :class:`ProtocolViolation` instead of buffering without bound.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max_frame_bytes = max_frame_bytes

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame now complete (terminator removed)."""
        # Search only where a terminator could newly appear, so a large frame arriving
        # in many small reads costs linear, not quadratic, time.
        search_from = max(0, len(self._buffer) - len(TERMINATOR) + 1)
        self._buffer += data
        frames: list[bytes] = []
        start = 0
        while True:
            end = self._buffer.find(TERMINATOR, max(start, search_from))
            if end < 0:
                break
            frames.append(bytes(self._buffer[start:end]))
            start = end + len(TERMINATOR)
        if start:
            del self._buffer[:start]
        if len(self._buffer) > self._max_frame_bytes:
            size = len(self._buffer)
            self._buffer.clear()
            msg = f"no frame terminator within {size} bytes (limit {self._max_frame_bytes})"
            raise ProtocolViolation(msg)
        return frames


class RequestSplitter:
    """Cuts a client's byte stream into requests, in every framing real servers accept.

    A request ends at a ``#\\r\\n`` that follows its ``</bts>`` (whitespace between them
    allowed): ``#\\r\\n``, ``\\n\\n#\\r\\n``, ``</bts>#\\r\\n`` and ``</bts>\\r\\n#\\r\\n`` all
    end one. A ``#\\r\\n`` inside the document (in a barcode, say) does not. Frames come
    out without the terminator and without the whitespace before it. Past
    ``max_frame_bytes`` without an end, :class:`ProtocolViolation`.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max_frame_bytes = max_frame_bytes
        self._search_from = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not yet form a whole request."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every request now complete."""
        self._buffer += data
        frames: list[bytes] = []
        start = 0
        while True:
            end = self._buffer.find(REQUEST_END, max(start, self._search_from))
            if end < 0:
                break
            body = bytes(self._buffer[start:end]).rstrip(b" \t\r\n")
            if body.endswith(_BTS_CLOSE):
                frames.append(body)
                start = end + len(REQUEST_END)
                self._search_from = start
            else:
                self._search_from = end + 1  # a '#\r\n' inside the document
        if start:
            del self._buffer[:start]
            self._search_from -= start
        # Only where a terminator could newly appear is searched at the next feed.
        self._search_from = max(self._search_from, len(self._buffer) - len(REQUEST_END) + 1, 0)
        if len(self._buffer) > self._max_frame_bytes:
            size = len(self._buffer)
            self._buffer.clear()
            self._search_from = 0
            msg = f"no request terminator within {size} bytes (limit {self._max_frame_bytes})"
            raise ProtocolViolation(msg)
        return frames


def frame(xml_text: str) -> bytes:
    """One frame on the wire: the document followed by the terminator."""
    return xml_text.encode("utf-8") + TERMINATOR


# ================================================================ helpers


def _num(value: float, decimals: int) -> str:
    """Fixed-point text without trailing zeros, as the BTS server prints it."""
    if not math.isfinite(value):
        return "0"
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _attr(value: object) -> str:
    return quoteattr(str(value))


def _channel_attrs(address: ChannelAddress, *, ip: bool = True, chl_name: str = "chlid") -> str:
    ch = address.channel
    head = f"ip={_attr(address.ip)} " if ip else ""
    return (
        f'{head}devtype="{address.devtype}" devid="{ch.devid}" '
        f'subdevid="{ch.subdevid}" {chl_name}="{ch.chlid}"'
    )


class _Reader:
    """Typed access to one element's attributes; every failure names the place."""

    __slots__ = ("attrib", "element", "where")

    def __init__(self, element: Element, where: str) -> None:
        self.element = element
        self.attrib = element.attrib
        self.where = where

    def _raw(self, name: str) -> str:
        try:
            return self.attrib[name]
        except KeyError:
            msg = f"{self.where}: attribute {name!r} is missing"
            raise ProtocolViolation(msg) from None

    def text(self, name: str, default: str | None = None) -> str:
        if default is not None and name not in self.attrib:
            return default
        return self._raw(name)

    def int(self, name: str, default: int | None = None) -> int:
        if default is not None and name not in self.attrib:
            return default
        raw = self._raw(name)
        try:
            return int(raw)
        except ValueError:
            try:
                number = float(raw)
            except ValueError:
                number = math.nan
            if number.is_integer():
                return int(number)
            msg = f"{self.where}: attribute {name!r} must be an integer, got {raw!r}"
            raise ProtocolViolation(msg) from None

    def float(self, name: str) -> float:
        raw = self._raw(name)
        try:
            number = float(raw)
        except ValueError:
            msg = f"{self.where}: attribute {name!r} must be a number, got {raw!r}"
            raise ProtocolViolation(msg) from None
        if not math.isfinite(number):
            msg = f"{self.where}: attribute {name!r} is not finite: {raw!r}"
            raise ProtocolViolation(msg)
        return number

    def time(self, name: str) -> datetime:
        raw = self._raw(name)
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            msg = f"{self.where}: attribute {name!r} must be 'YYYY-MM-DD HH:MM:SS', got {raw!r}"
            raise ProtocolViolation(msg) from None

    def address(self, chl_name: str = "chlid", default_ip: str = "127.0.0.1") -> ChannelAddress:
        return ChannelAddress(
            ChannelId(self.int("devid"), self.int("subdevid"), self.int(chl_name)),
            self.int("devtype"),
            self.attrib.get("ip", default_ip),
        )

    def _dev_parts(self) -> list[builtins.int]:  # bare int is _Reader.int here
        raw = self._raw("dev")
        # ASCII digits only: str.isdigit() also accepts "²", which int() then rejects.
        if _DEV_RE.fullmatch(raw) is None:
            msg = f"{self.where}: 'dev' must be devtype-devid-subdevid-chlid-aux, got {raw!r}"
            raise ProtocolViolation(msg)
        return [int(p) for p in raw.split("-")]

    def dev_address(self) -> ChannelAddress:
        """``dev="devtype-devid-subdevid-chlid-aux"`` as in ``inquire`` replies."""
        devtype, devid, subdevid, chlid = self._dev_parts()[:4]
        return ChannelAddress(ChannelId(devid, subdevid, chlid), devtype)

    def dev_aux(self) -> builtins.int:
        """The ``aux`` part of ``dev`` (0 when the server leaves it out)."""
        parts = self._dev_parts()
        return parts[4] if len(parts) > 4 else 0

    def flag(self) -> bool:
        return _bool_text(self.element, self.where)


def _bool_text(element: Element, where: str) -> bool:
    text = (element.text or "").strip().lower()
    if text in ("ok", "true"):
        return True
    if text == "false":
        return False
    msg = f"{where}: expected ok, true or false, got {element.text!r}"
    raise ProtocolViolation(msg)


# NUL bytes mean UTF-16/32, where the markers would hide; BTS frames are UTF-8.
_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY", b"\x00")


def _parse(frame_bytes: bytes | str, what: str) -> Element:
    # A BTS frame never has a DTD, and without one expat can expand no entity but the
    # five predefined ones and resolves nothing external: refusing DTDs up front is the
    # guard defusedxml gives, and lets the C parser (4x faster than defusedxml's
    # pure-Python one) read the hot path of every poll.
    data = frame_bytes.encode("utf-8") if isinstance(frame_bytes, str) else frame_bytes
    if any(marker in data for marker in _DTD_MARKERS):
        msg = f"{what}: a DTD, entity declaration or NUL byte is not allowed in a BTS frame"
        raise ProtocolViolation(msg)
    try:
        parser = XMLParser()
        parser.feed(data)
        root: Element = parser.close()
    except Exception as err:  # expat and encoding errors alike
        preview = bytes(frame_bytes[:80]) if isinstance(frame_bytes, bytes) else frame_bytes[:80]
        msg = f"malformed {what} XML ({err}): {preview!r}"
        raise ProtocolViolation(msg) from err
    if root.tag != "bts":
        msg = f"{what}: root element must be <bts>, got <{root.tag}>"
        raise ProtocolViolation(msg)
    return root


def _cmd(root: Element, what: str) -> str:
    node = root.find("cmd")
    if node is None or not (node.text or "").strip():
        msg = f"{what}: <cmd> is missing"
        raise ProtocolViolation(msg)
    return (node.text or "").strip()


def _list_items(root: Element, cmd: str, list_tag: str = "list") -> list[Element]:
    node = root.find(list_tag)
    if node is None:
        msg = f"{cmd}: <{list_tag}> is missing"
        raise ProtocolViolation(msg)
    return list(node)


_T = TypeVar("_T")


def _items(
    root: Element,
    cmd: str,
    tag: str,
    build: Callable[[_Reader], _T],
    list_tag: str = "list",
    *,
    fast: Callable[[dict[str, str]], _T] | None = None,
) -> tuple[_T, ...]:
    """Build every item of a list; ``fast`` reads well-formed attributes directly.

    Downloads carry a thousand records a page, so the common, well-formed case skips
    the checked reader; any item the fast path cannot read goes through ``build``,
    which raises the precise :class:`ProtocolViolation`.
    """
    out = []
    for index, element in enumerate(_list_items(root, cmd, list_tag), start=1):
        if element.tag != tag:
            msg = f"{cmd}: item {index} is <{element.tag}>, expected <{tag}>"
            raise ProtocolViolation(msg)
        if fast is not None:
            try:
                out.append(fast(element.attrib))
                continue
            except (KeyError, ValueError, OverflowError):
                pass
        out.append(build(_Reader(element, f"{cmd} <{tag}> #{index}")))
    return tuple(out)


_isfinite = math.isfinite


def _download_record_fast(a: dict[str, str]) -> DownloadRecord:
    volt, curr, cap, eng = float(a["volt"]), float(a["curr"]), float(a["cap"]), float(a["eng"])
    if not (_isfinite(volt) and _isfinite(curr) and _isfinite(cap) and _isfinite(eng)):
        raise ValueError
    numbers = (a["seqid"], a["stepid"], a["cycleid"], a["testtime"])
    if not all(n.isascii() and n.isdigit() and len(n) <= 18 for n in numbers):
        raise ValueError
    return DownloadRecord(
        int(numbers[0]),
        int(numbers[1]),
        int(numbers[2]),
        a["steptype"],
        int(numbers[3]),
        datetime.fromisoformat(a["atime"]),
        volt,
        curr,
        cap,
        eng,
    )


# ---------------------------------------------------------------- download pages
#
# A daemon catching up reads its instruments' history a thousand records per reply:
# that is where a client spends its time per sample. The items of a page are read
# column-wise, with no per-record or per-attribute Python code: the body is split at
# its quotes once, and every column is a slice of that list converted by ``map``.
# The envelope (everything but the items) still goes through expat and the checked
# decoder, and the items take this path only when every byte between ``<list ...>``
# and ``</list>`` is whitespace or a ``<data .../>`` written exactly as the BTS server
# writes it (attribute order, quoting, no entity, no control character in a value).
# Each column is converted by the very function the checked decoder applies to that
# attribute (int, float with a finiteness test, datetime.fromisoformat), so both give
# the same records; anything else, however legal, goes through the checked path,
# which gives the same reply or names the attribute that is wrong.

_DATA_FIELDS = (
    "seqid",
    "stepid",
    "cycleid",
    "steptype",
    "testtime",
    "atime",
    "volt",
    "curr",
    "cap",
    "eng",
)
# Quotes per <data> item: two per attribute.
_DATA_QUOTES = 2 * len(_DATA_FIELDS)
# What lies between one value and the next inside an item: ' stepid=' etc.
_DATA_NAMES = tuple(f" {name}=" for name in _DATA_FIELDS[1:])
_DATA_FIRST_RE = re.compile("[ \t\r\n]*<data seqid=")
_DATA_BETWEEN_RE = re.compile(" />[ \t\r\n]*<data seqid=")
_DATA_LAST_RE = re.compile(" />[ \t\r\n]*")
# The list's start tag with plain attributes (no '<' or '>' inside a value, so the
# tag ends where this match ends).
_LIST_OPEN_RE = re.compile(rb'<list(?:[ \t\r\n]+[A-Za-z_]+="[^"<>&]*")*[ \t\r\n]*>')
# A record without a Python-level constructor call: NamedTuple._make does the same.
_new_download_record = cast(
    "Callable[[tuple[object, ...]], DownloadRecord]", partial(tuple.__new__, DownloadRecord)
)
_fromisoformat = datetime.fromisoformat


def _download_reply_fast(data: bytes) -> DownloadReply | None:
    """A well-formed ``download`` reply read column-wise; ``None``: use the checked path."""
    # The <cmd> comes first in every reply; a frame that puts it later is still read,
    # by the checked path.
    if data.find(b"load_resp</cmd>", 0, 512) < 0:
        return None
    # Exactly one list, so the one cut out is the <list> the checked decoder reads.
    if data.count(b"<list") != 1 or data.count(b"</list") != 1:
        return None
    opening = _LIST_OPEN_RE.search(data)
    if opening is None:
        return None
    start = opening.end()
    end = data.find(b"</list", start)
    try:
        body = data[start:end].decode("ascii")
        records = _download_items_fast(body)
    except (UnicodeDecodeError, ValueError):
        return None  # not ASCII, or a value the checked path must judge
    if records is None:
        return None
    try:
        head = _decode_reply_checked(data[:start] + data[end:])
    except ProtocolViolation:
        return None
    if not isinstance(head, DownloadReply) or head.records:
        return None
    return DownloadReply(head.address, head.test_id, head.start_pos, head.count, records)


def _download_items_fast(body: str) -> tuple[DownloadRecord, ...] | None:
    """The records of a page's body; ``None`` (or ValueError) if not in the server's form."""
    parts = body.split('"')
    n, rest = divmod(len(parts) - 1, _DATA_QUOTES)
    if rest:
        return None
    if n == 0:
        return () if not body.strip(" \t\r\n") else None
    # The text around the values: item starts, attribute names, item ends.
    if _DATA_FIRST_RE.fullmatch(parts[0]) is None:
        return None
    if _DATA_LAST_RE.fullmatch(parts[-1]) is None:
        return None
    between = set(parts[_DATA_QUOTES:-1:_DATA_QUOTES])
    if not all(_DATA_BETWEEN_RE.fullmatch(text) for text in between):
        return None
    for offset, name in enumerate(_DATA_NAMES, start=1):
        if parts[2 * offset : -1 : _DATA_QUOTES].count(name) != n:
            return None
    # No entity and no '<' but the items' own; no control character in a value
    # (expat refuses them, or turns tab, CR and LF into spaces).
    if "&" in body or body.count("<") != n or not "".join(parts[1::2]).isprintable():
        return None
    columns = [parts[2 * i + 1 :: _DATA_QUOTES] for i in range(len(_DATA_FIELDS))]
    seq, step, cycle, step_type, test_ms, wall, volt, curr, cap, eng = columns
    floats = [tuple(map(float, column)) for column in (volt, curr, cap, eng)]
    if not all(all(map(_isfinite, column)) for column in floats):
        return None  # the checked path names the attribute that is not finite
    return tuple(
        map(
            _new_download_record,
            zip(
                map(int, seq),
                map(int, step),
                map(int, cycle),
                step_type,
                map(int, test_ms),
                map(_fromisoformat, wall),
                *floats,
                strict=True,
            ),
        )
    )


def _digits(text: str) -> bool:
    # ASCII digits only (str.isdigit() also takes "²"), at most 18 of them, as _DEV_RE.
    return text.isascii() and text.isdigit() and len(text) <= 18


def _inquire_record_fast(a: dict[str, str]) -> InquireRecord:
    """The well-formed ``<inquire>`` item; anything unusual raises for the checked path.

    Every poll decodes one of these per channel (2,048 on a large rack), so the common
    case reads the attributes directly instead of through :class:`_Reader`.
    """
    dev = a["dev"].split("-")
    if not 4 <= len(dev) <= 5 or not all(_digits(p) for p in dev):
        raise ValueError
    numbers = (
        float(a["current"]),
        float(a["voltage"]),
        float(a["capacity"]),
        float(a["energy"]),
        float(a["totaltime"]),
        float(a["relativetime"]),
    )
    if not all(_isfinite(x) for x in numbers):
        raise ValueError
    step_id = a.get("step_id")
    step_type = a["step_type"]
    return InquireRecord(
        address=ChannelAddress(ChannelId(int(dev[1]), int(dev[2]), int(dev[3])), int(dev[0])),
        cycle_id=int(a["cycle_id"]),
        step_id=None if step_id is None else int(step_id),
        step_type=None if step_type == "--" else step_type,
        workstatus=a["workstatus"],
        barcode=a.get("barcode", ""),
        current_a=numbers[0],
        voltage_v=numbers[1],
        capacity_ah=numbers[2],
        energy_wh=numbers[3],
        total_time_s=numbers[4],
        relative_time_s=numbers[5],
        open_or_close=int(a.get("open_or_close", "0")),
        log_code=int(a.get("log_code", "0")),
        aux=int(dev[4]) if len(dev) > 4 else 0,
    )


# ================================================================ requests


def encode_request(request: Request) -> bytes:
    """The request as one frame, in the form BTS clients send it."""
    return frame(_REQUEST_HEAD + _request_body(request) + "</bts>")


def _channel_list(tag: str, channels: tuple[ChannelAddress, ...], extra: str, text: str) -> str:
    items = "".join(f"<{tag} {_channel_attrs(a)}{extra}>{text}</{tag}>" for a in channels)
    return f'<list count="{len(channels)}">{items}</list>'


def _request_body(request: Request) -> str:
    match request:
        case Connect(username, password, client_type):
            return (
                f"<cmd>connect</cmd><username>{escape(username)}</username>"
                f"<password>{escape(password)}</password><type>{escape(client_type)}</type>"
            )
        case GetDevInfo():
            return "<cmd>getdevinfo</cmd>"
        case GetChlStatus(channels):
            return "<cmd>getchlstatus</cmd>" + _channel_list("status", channels, "", "true")
        case Inquire(channels):
            return "<cmd>inquire</cmd>" + _channel_list(
                "inquire", channels, ' aux="0" barcode="1"', "true"
            )
        case InquireDf(channels):
            items = "".join(f'<chl {_channel_attrs(a, ip=False)} testid="0" />' for a in channels)
            return f'<cmd>inquiredf</cmd><list count="{len(channels)}">{items}</list>'
        case Start(items, backup_dir):
            body = "".join(
                f"<start {_channel_attrs(item.address)} barcode={_attr(item.barcode)}>"
                f"{escape(item.step_file_path)}</start>"
                for item in items
            )
            backup = (
                f'<backup backupdir={_attr(backup_dir)} remotedir="" filenametype="0" '
                'customfilename="" addtimewhenrepeat="0" createdirbydate="0" filetype="0" '
                'backupontime="1" backupontimeinterval="720" backupfree="1" />'
            )
            return f'<cmd>start</cmd><list count="{len(items)}">{body}{backup}</list>'
        case Stop(channels):
            return "<cmd>stop</cmd>" + _channel_list("stop", channels, "", "true")
        case ClearFlag(channels):
            return "<cmd>clearflag</cmd>" + _channel_list("clearflag", channels, "", "true")
        case Light(channels, on):
            return "<cmd>light</cmd>" + _channel_list("light", channels, "", str(on).lower())
        case Pause(channels):
            # Pause now: a scheduled pause at "any cycle, any step" (-1, -1).
            return "<cmd>setpause</cmd>" + _channel_list(
                "setpause", channels, ' cycleid="-1" stepid="-1" timeout=""', "true"
            )
        case Continue(channels):
            return "<cmd>continue</cmd>" + _channel_list("continue", channels, "", "true")
        case Download(address, start_pos, count, test_id, aux_id):
            return (
                f"<cmd>download</cmd><download {_channel_attrs(address, ip=False)} "
                f'auxid="{aux_id}" testid="{test_id}" startpos="{start_pos}" count="{count}"/>'
            )
        case DownloadLog(address, test_id):
            return (
                f"<cmd>downloadlog</cmd><download {_channel_attrs(address, ip=False)} "
                f'testid="{test_id}"/>'
            )
        case DownloadStepLayer(address, test_id):
            return (
                f"<cmd>downloadStepLayer</cmd><downloadStepLayer "
                f'{_channel_attrs(address, ip=False)} testid="{test_id}" />'
            )
        case OtherCommand(cmd, channels):
            body = f"<cmd>{escape(cmd)}</cmd>"
            if channels:
                body += _channel_list(_xml_name(cmd), channels, "", "true")
            return body
    assert_never(request)


_XML_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def _xml_name(cmd: str) -> str:
    """``cmd`` as an element name, or ``item`` when it cannot be one."""
    return cmd if _XML_NAME_RE.fullmatch(cmd) else "item"


def decode_request(frame_bytes: bytes | str) -> Request:
    """Parse one request frame (server side)."""
    root = _parse(frame_bytes, "request")
    cmd = _cmd(root, "request")
    match cmd:
        case "connect":
            return Connect(
                root.findtext("username", ""),
                root.findtext("password", ""),
                root.findtext("type", ""),
            )
        case "getdevinfo":
            return GetDevInfo()
        case "getchlstatus":
            return GetChlStatus(_items(root, cmd, "status", _Reader.address))
        case "inquire":
            return Inquire(_items(root, cmd, "inquire", _Reader.address))
        case "inquiredf":
            return InquireDf(_items(root, cmd, "chl", _Reader.address))
        case "start":
            return _decode_start(root)
        case "stop":
            return Stop(_items(root, cmd, "stop", _Reader.address))
        case "clearflag":
            return ClearFlag(_items(root, cmd, "clearflag", _Reader.address))
        case "setpause":
            return Pause(_items(root, cmd, "setpause", _Reader.address))
        case "continue":
            return Continue(_items(root, cmd, "continue", _Reader.address))
        case "light":
            lights = _list_items(root, cmd, "list")
            on = all((e.text or "").strip().lower() != "false" for e in lights)
            return Light(_items(root, cmd, "light", _Reader.address), on)
        case "download":
            r = _single(root, "download", cmd)
            return Download(
                r.address(),
                r.int("startpos"),
                r.int("count"),
                r.int("testid", 0),
                r.int("auxid", 0),
            )
        case "downloadlog":
            r = _single(root, "download", cmd)
            return DownloadLog(r.address(), r.int("testid", 0))
        case "downloadStepLayer":
            r = _single(root, "downloadStepLayer", cmd)
            return DownloadStepLayer(r.address(), r.int("testid", 0))
    # Any other command, known to real servers or not, is answered: its channels are
    # whatever items of its list name one.
    return OtherCommand(cmd, _named_channels(root))


def _named_channels(root: Element) -> tuple[ChannelAddress, ...]:
    """The channels the items of ``<list>`` name, or elements beside ``<cmd>`` (``reset``
    names its channel that way); items that name no whole channel are passed over."""
    node = root.find("list")
    candidates = list(node) if node is not None else []
    candidates += [e for e in root if e.tag not in ("cmd", "list")]
    out = []
    for element in candidates:
        if {"devid", "subdevid", "chlid"} <= element.attrib.keys():
            reader = _Reader(element, f"<{element.tag}>")
            out.append(
                ChannelAddress(
                    ChannelId(reader.int("devid"), reader.int("subdevid"), reader.int("chlid")),
                    reader.int("devtype", 0),
                    element.get("ip", "127.0.0.1"),
                )
            )
    return tuple(out)


def _single(root: Element, tag: str, cmd: str) -> _Reader:
    node = root.find(tag)
    if node is None:
        msg = f"{cmd}: <{tag}> is missing"
        raise ProtocolViolation(msg)
    return _Reader(node, f"{cmd} <{tag}>")


def _decode_start(root: Element) -> Start:
    items: list[StartItem] = []
    backup_dir = ""
    for index, element in enumerate(_list_items(root, "start"), start=1):
        if element.tag == "backup":
            backup_dir = element.get("backupdir", "")
            continue
        if element.tag != "start":
            msg = f"start: item {index} is <{element.tag}>, expected <start>"
            raise ProtocolViolation(msg)
        reader = _Reader(element, f"start <start> #{index}")
        items.append(
            StartItem(reader.address(), reader.text("barcode", ""), (element.text or "").strip())
        )
    return Start(tuple(items), backup_dir)


# ================================================================ replies


def reply_name(request: Request) -> str:
    """The ``<cmd>`` a reply to ``request`` carries, as the real server spells it."""
    if isinstance(request, OtherCommand):
        return f"{request.cmd}_resp"
    return _REPLY_NAMES[_request_cmd(request)]


def _request_cmd(request: Request) -> str:
    names: dict[type, str] = {
        Connect: "connect",
        GetDevInfo: "getdevinfo",
        GetChlStatus: "getchlstatus",
        Inquire: "inquire",
        InquireDf: "inquiredf",
        Start: "start",
        Stop: "stop",
        ClearFlag: "clearflag",
        Light: "light",
        Pause: "setpause",
        Continue: "continue",
        Download: "download",
        DownloadLog: "downloadlog",
        DownloadStepLayer: "downloadStepLayer",
    }
    if isinstance(request, OtherCommand):
        return request.cmd
    return names[type(request)]


def encode_reply(reply: Reply) -> bytes:
    """The reply as one frame, written as the real BTS 8 server writes it."""
    if isinstance(reply, DownloadReply):
        items = [download_item(r) for r in reply.records]
        return encode_download_reply(
            reply.address, reply.test_id, reply.start_pos, reply.count, items
        )
    lines = [_XML_DECL, '<bts version="1.0">']
    lines.extend(_reply_lines(reply))
    lines.append("</bts>")
    return frame("\r\n".join(lines))


def _list_lines(items: list[str]) -> list[str]:
    return [f'  <list count="{len(items)}">', *items, "  </list>"]


def _reply_lines(reply: Reply) -> list[str]:
    match reply:
        case ConnectReply(ok):
            return ["  <cmd>connect_resp</cmd>", f"  <result>{'ok' if ok else 'false'}</result>"]
        case DevInfoReply(channels, server_ip, server_port):
            lines = ["  <cmd>getdevinfo_resp</cmd>"]
            if server_ip is not None:
                lines += [
                    '  <serverip count="1">',
                    f'    <server ip={_attr(server_ip)} port="{server_port or 0}" />',
                    "  </serverip>",
                ]
            lines.append(f'  <middle count="{len(channels)}">')
            lines += [
                f"    <channel {_channel_attrs(c.address, chl_name='Channelid')}>"
                f"{str(c.available).lower()}</channel>"
                for c in channels
            ]
            lines.append("</middle>")
            return lines
        case StatusReply(items):
            # The recorded server reports each unit's own subdevid (some servers
            # sometimes report a wrong one: clients map by the address they asked for).
            return [
                "  <cmd>getchlstatus_resp</cmd>",
                *_list_lines(
                    [
                        f'    <status ip={_attr(s.address.ip)} devtype="{s.address.devtype}" '
                        f'devid="{s.address.channel.devid}" '
                        f'subdevid="{s.address.channel.subdevid}" '
                        f'chlid="{s.address.channel.chlid}" reservepause="{s.reserve_pause}">'
                        f"{escape(s.status)}</status>"
                        for s in items
                    ]
                ),
            ]
        case InquireReply(items):
            return ["  <cmd>inquire_resp</cmd>", *_list_lines([_inquire_line(r) for r in items])]
        case InquireDfReply(items):
            return [
                "  <cmd>inquiredf_resp</cmd>",
                *_list_lines(
                    [
                        f'    <chl {_channel_attrs(d.address, ip=False)} testid="{d.test_id}" '
                        f'count="{d.count}">{str(d.flag).lower()}</chl>'
                        for d in items
                    ]
                ),
            ]
        case CommandReply(command, items):
            return [
                f"  <cmd>{command}_resp</cmd>",
                *_list_lines(
                    [
                        f"    <{command} {_channel_attrs(r.address)}>"
                        f"{'ok' if r.ok else 'false'}</{command}>"
                        for r in items
                    ]
                ),
            ]
        case DownloadReply():
            # encode_reply writes it from its items (encode_download_reply).
            raise AssertionError(reply)
        case DownloadLogReply(address, test_id, records):
            return [
                "  <cmd>donwloadlog_resp</cmd>",
                f'  <download {_channel_attrs(address, ip=False)} testid="{test_id}" '
                'log_lever="0" />',
                *_list_lines(
                    [
                        f'    <data seqid="{r.seq_id}" log_code="{r.log_code}" '
                        f'atime="{r.wall_time:{_WALL_FORMAT}}" />'
                        for r in records
                    ]
                ),
            ]
        case StepLayerReply(address, test_id, records):
            return [
                "  <cmd>downloadStepLayer_resp</cmd>",
                f'  <downloadStepLayer {_channel_attrs(address, ip=False)} testid="{test_id}" />',
                *_list_lines([_step_layer_line(r) for r in records]),
            ]
        case OtherReply(cmd, items, result, error):
            lines = [f"  <cmd>{escape(cmd)}_resp</cmd>"]
            if items:
                tag = _xml_name(cmd)
                lines += _list_lines(
                    [
                        f"    <{tag} {_channel_attrs(r.address)}>"
                        f"{'ok' if r.ok else 'false'}</{tag}>"
                        for r in items
                    ]
                )
            if result is not None or not items:
                lines.append(f"  <result>{escape(result or 'false')}</result>")
            if error:
                lines.append(f"  <error>{escape(error)}</error>")
            return lines
    assert_never(reply)


def _inquire_line(r: InquireRecord) -> str:
    ch = r.address.channel
    step = f'step_id="{r.step_id}" ' if r.step_id is not None else ""
    # inquire rounds to 4 decimals on the real server: 0.1 mV and 0.1 mA.
    return (
        f'    <inquire dev="{r.address.devtype}-{ch.devid}-{ch.subdevid}-{ch.chlid}-{r.aux}" '
        f'cycle_id="{r.cycle_id}" {step}step_type={_attr(r.step_type or "--")} '
        f"workstatus={_attr(r.workstatus)} barcode={_attr(r.barcode)} "
        f'current="{_num(r.current_a, 4)}" voltage="{_num(r.voltage_v, 4)}" '
        f'capacity="{_num(r.capacity_ah, 4)}" energy="{_num(r.energy_wh, 4)}" '
        f'totaltime="{_num(r.total_time_s, 1)}" relativetime="{_num(r.relative_time_s, 1)}" '
        f'open_or_close="{r.open_or_close}" log_code="{r.log_code}" />'
    )


def download_item(r: DownloadRecord) -> bytes:
    """One ``<data>`` line of a ``download`` reply, indentation included, as bytes.

    A recorded sample never changes, so a server may encode it once and keep the
    bytes (as the simulator does: a real BTS server serves its history from its
    database); :func:`encode_download_reply` joins such items into the frame.
    """
    return (
        f'    <data seqid="{r.seq_id}" stepid="{r.step_id}" cycleid="{r.cycle_id}" '
        f'steptype={_attr(r.step_type)} testtime="{r.test_time_ms}" '
        f'atime="{r.wall_time:{_WALL_FORMAT}}" volt="{r.voltage_v!r}" curr="{r.current_a!r}" '
        f'cap="{r.capacity_ah!r}" eng="{r.energy_wh!r}" />'
    ).encode()


def encode_download_reply(
    address: ChannelAddress, test_id: int, start_pos: int, count: int, items: Sequence[bytes]
) -> bytes:
    """A ``download`` reply frame from its items (:func:`download_item`), joined as bytes.

    Byte for byte what :func:`encode_reply` writes for the same
    :class:`DownloadReply`: a server answering from cached items costs one join.
    """
    head = (
        f'{_XML_DECL}\r\n<bts version="1.0">\r\n  <cmd>donwload_resp</cmd>\r\n'
        f'  <download {_channel_attrs(address, ip=False)} testid="{test_id}" '
        f'startpos="{start_pos}" count="{count}" auxid="0" />\r\n'
        f'  <list count="{len(items)}">\r\n'
    ).encode()
    body = b"\r\n".join(items) + b"\r\n" if items else b""
    return head + body + b"  </list>\r\n</bts>" + TERMINATOR


def _step_layer_line(r: StepLayerRecord) -> str:
    return (
        f'    <data startseqid="{r.start_seq_id}" endseqid="{r.end_seq_id}" '
        f'stepindex="{r.step_index}" stepid="{r.step_id}" cycleid="{r.cycle_id}" '
        f'steptype={_attr(r.step_type)} steptime="{r.step_time_ms}" '
        f'endatime="{r.end_wall_time:{_WALL_FORMAT}}" startvolt="{r.start_voltage_v!r}" '
        f'endvolt="{r.end_voltage_v!r}" startcurr="{r.start_current_a!r}" '
        f'endcurr="{r.end_current_a!r}" cap="{r.capacity_ah!r}" eng="{r.energy_wh!r}" '
        'dcir="0" />'
    )


def decode_reply(frame_bytes: bytes | str) -> Reply:
    """Parse one reply frame into a typed reply; :class:`ProtocolViolation` if malformed."""
    data = frame_bytes.encode("utf-8") if isinstance(frame_bytes, str) else frame_bytes
    fast = _download_reply_fast(data)
    if fast is not None:
        return fast
    return _decode_reply_checked(data)


def _decode_reply_checked(frame_bytes: bytes) -> Reply:
    root = _parse(frame_bytes, "reply")
    cmd = _cmd(root, "reply")
    cmd = _REPLY_ALIASES.get(cmd, cmd)
    match cmd:
        case "connect_resp":
            result = root.find("result")
            if result is None:
                msg = "connect_resp: <result> is missing"
                raise ProtocolViolation(msg)
            return ConnectReply(_bool_text(result, "connect_resp <result>"))
        case "getdevinfo_resp":
            return _decode_devinfo(root)
        case "getchlstatus_resp":
            return StatusReply(_items(root, cmd, "status", _status))
        case "inquire_resp":
            return InquireReply(
                _items(root, cmd, "inquire", _inquire_record, fast=_inquire_record_fast)
            )
        case "inquiredf_resp":
            return InquireDfReply(_items(root, cmd, "chl", _data_count))
        case (
            "start_resp"
            | "stop_resp"
            | "clearflag_resp"
            | "light_resp"
            | "setpause_resp"
            | "continue_resp"
        ):
            name = cmd.removesuffix("_resp")
            results = _items(root, cmd, name, _command_result)
            return CommandReply(name, results)  # type: ignore[arg-type]
        case "donwload_resp":
            head = _single(root, "download", cmd)
            return DownloadReply(
                head.address(),
                head.int("testid"),
                head.int("startpos"),
                head.int("count"),
                *_download_items(root, cmd),
            )
        case "donwloadlog_resp":
            head = _single(root, "download", cmd)
            return DownloadLogReply(
                head.address(), head.int("testid"), _items(root, cmd, "data", _log_record)
            )
        case "downloadStepLayer_resp":
            head = _single(root, "downloadStepLayer", cmd)
            return StepLayerReply(
                head.address(), head.int("testid"), _items(root, cmd, "data", _step_layer_record)
            )
    if cmd.endswith("_resp") and len(cmd) > len("_resp"):
        return _decode_other(root, cmd.removesuffix("_resp"))
    msg = f"unknown reply command {cmd!r}"
    raise ProtocolViolation(msg)


def _decode_other(root: Element, name: str) -> OtherReply:
    items: tuple[CommandResult, ...] = ()
    if root.find("list") is not None:
        items = _items(root, f"{name}_resp", _xml_name(name), _command_result)
    result = root.findtext("result")
    error = root.findtext("error")
    return OtherReply(
        name,
        items,
        None if result is None else result.strip(),
        None if error is None else error.strip(),
    )


def _download_items(
    root: Element, cmd: str
) -> tuple[tuple[DownloadRecord, ...], tuple[SkippedRecord, ...]]:
    """The records of a page, and the items that could not be read (with where and why).

    One unreadable record (``volt="nan"``, a missing attribute) must not cost the page:
    it is reported and the rest are kept.
    """
    records: list[DownloadRecord] = []
    skipped: list[SkippedRecord] = []
    for index, element in enumerate(_list_items(root, cmd), start=1):
        try:
            records.append(_download_item(element, cmd, index))
        except ProtocolViolation as err:
            raw_seq = element.get("seqid", "")
            seq_id = int(raw_seq) if _digits(raw_seq) else None
            skipped.append(SkippedRecord(index, seq_id, str(err)))
    return tuple(records), tuple(skipped)


def _download_item(element: Element, cmd: str, index: int) -> DownloadRecord:
    if element.tag != "data":
        msg = f"{cmd}: item {index} is <{element.tag}>, expected <data>"
        raise ProtocolViolation(msg)
    try:
        return _download_record_fast(element.attrib)
    except (KeyError, ValueError, OverflowError):
        return _download_record(_Reader(element, f"{cmd} <data> #{index}"))


def _decode_devinfo(root: Element) -> DevInfoReply:
    server = root.find("serverip/server")
    server_ip = server.get("ip") if server is not None else None
    server_port: int | None = None
    if server is not None:
        server_port = _Reader(server, "getdevinfo_resp <server>").int("port", 0)
    channels = _items(
        root,
        "getdevinfo_resp",
        "channel",
        lambda r: ChannelInfo(r.address("Channelid"), r.flag()),
        list_tag="middle",
    )
    return DevInfoReply(channels, server_ip, server_port)


def _status(r: _Reader) -> ChannelStatus:
    return ChannelStatus(r.address(), (r.element.text or "").strip(), r.int("reservepause", 1))


def _command_result(r: _Reader) -> CommandResult:
    return CommandResult(r.address(), r.flag())


def _data_count(r: _Reader) -> DataCount:
    return DataCount(r.address(), r.int("testid"), r.int("count"), r.flag())


def _inquire_record(r: _Reader) -> InquireRecord:
    step_type = r.text("step_type")
    address = r.dev_address()
    return InquireRecord(
        address=address,
        cycle_id=r.int("cycle_id"),
        step_id=r.int("step_id") if "step_id" in r.attrib else None,
        step_type=None if step_type == "--" else step_type,
        workstatus=r.text("workstatus"),
        barcode=r.text("barcode", ""),
        current_a=r.float("current"),
        voltage_v=r.float("voltage"),
        capacity_ah=r.float("capacity"),
        energy_wh=r.float("energy"),
        total_time_s=r.float("totaltime"),
        relative_time_s=r.float("relativetime"),
        open_or_close=r.int("open_or_close", 0),
        log_code=r.int("log_code", 0),
        aux=r.dev_aux(),
    )


def _download_record(r: _Reader) -> DownloadRecord:
    return DownloadRecord(
        seq_id=r.int("seqid"),
        step_id=r.int("stepid"),
        cycle_id=r.int("cycleid"),
        step_type=r.text("steptype"),
        test_time_ms=r.int("testtime"),
        wall_time=r.time("atime"),
        voltage_v=r.float("volt"),
        current_a=r.float("curr"),
        capacity_ah=r.float("cap"),
        energy_wh=r.float("eng"),
    )


def _log_record(r: _Reader) -> LogRecord:
    return LogRecord(r.int("seqid"), r.int("log_code"), r.time("atime"))


def _step_layer_record(r: _Reader) -> StepLayerRecord:
    return StepLayerRecord(
        start_seq_id=r.int("startseqid"),
        end_seq_id=r.int("endseqid"),
        step_index=r.int("stepindex"),
        step_id=r.int("stepid"),
        cycle_id=r.int("cycleid"),
        step_type=r.text("steptype"),
        step_time_ms=r.int("steptime"),
        end_wall_time=r.time("endatime"),
        start_voltage_v=r.float("startvolt"),
        end_voltage_v=r.float("endvolt"),
        start_current_a=r.float("startcurr"),
        end_current_a=r.float("endcurr"),
        capacity_ah=r.float("cap"),
        energy_wh=r.float("eng"),
    )
