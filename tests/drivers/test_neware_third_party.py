"""Other people's BTS clients against the simulator: every call answered, in every framing.

Three public clients (issue 16):

* **aurora-neware** (Empa, MIT, on PyPI, a test dependency): run as is.
* **Vanguard-1 ``neware_client.py``** (superch0054-hehai/Vanguard-1@5527b5f2f687,
  no licence given, so not vendored): a TCP client of 22 commands that frames each
  request as ``<?xml ...?>\\n<bts version="1.0">\\n{body}\\n</bts>#\\r\\n`` and reads up
  to ``</bts>``. Its requests are rebuilt here byte for byte (``vanguard_calls``).
* **Uni-Lab-OS Neware device** (deepmodeling/Uni-Lab-OS@b344c7ead4f1,
  ``unilabos/devices/neware_battery_test_system/neware_battery_test_system.py``; not
  vendored): one ``inquire`` (and, in earlier revisions, one ``getchlstatus``) of its
  720 channels, lines joined by ``\\n``, then ``#\\r\\n``; it reads up to ``#\\r\\n`` or
  ``</bts>``. Rebuilt byte for byte (``unilab_calls``).

Each byte-level client's calls are replayed in its own framing and in every other
framing a real server accepts, on a real socket, read back as that client reads.
``test_call_counts`` prints the tally the issue asks for.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aurora_neware.neware import NewareAPI

from cellguard.drivers import VirtualClock
from cellguard.drivers.neware import NewareSimulator
from cellguard.protocols import Cell, GalvanostaticCycling, write_step_file

EPOCH = datetime(2026, 1, 5, 9, 0, 0)
REPLY_TIMEOUT_S = 5.0
# What each client puts after its document's </bts>; a real server answers all four.
FRAMINGS = {
    "#CRLF": b"#\r\n",
    "LF LF #CRLF": b"\n\n#\r\n",
    "CRLF #CRLF": b"\r\n#\r\n",
    "LF #CRLF": b"\n#\r\n",
}
# The <cmd> of the real server's reply to each command (with its misspellings).
_REPLY_CMD = {"download": "donwload_resp", "downloadlog": "donwloadlog_resp"}

Call = tuple[str, bytes]  # (command, the document up to and including </bts>)


def _expected_cmd(cmd: str) -> str:
    return _REPLY_CMD.get(cmd, f"{cmd}_resp")


# ---------------------------------------------------------------- Vanguard-1


def _vanguard_attrs(chl: tuple[int, int, int, int], extra: dict[str, object] | None = None) -> str:
    devtype, devid, sub, n = chl
    parts = [
        'ip="127.0.0.1"',
        f'devtype="{devtype}"',
        f'devid="{devid}"',
        f'subdevid="{sub}"',
        f'chlid="{n}"',
    ]
    parts += [f'{k}="{v}"' for k, v in (extra or {}).items()]
    return " ".join(parts)


def _vanguard_doc(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8" ?>\n<bts version="1.0">\n' + body + "\n</bts>"
    ).encode("utf-8")


def vanguard_calls(step_file: str) -> list[Call]:
    """Every request Vanguard-1's client can send, in the order of a session on 1-1-1."""
    c = (27, 1, 1, 1)
    a = _vanguard_attrs(c)

    def listed(cmd: str, item: str, count: int = 1, list_attrs: str = "") -> str:
        return f'<cmd>{cmd}</cmd>\n<list count="{count}"{list_attrs}>\n{item}\n</list>'

    bodies = [
        ("getdevinfo", "<cmd>getdevinfo</cmd>"),
        ("getchlstatus", listed("getchlstatus", f"<status {a}>true</status>")),
        (
            "inquire",
            listed(
                "inquire", f"<inquire {_vanguard_attrs(c, {'aux': 0, 'barcode': 1})}>true</inquire>"
            ),
        ),
        (
            "start",
            listed(
                "start", f"<start {_vanguard_attrs(c, {'barcode': 'vg-1'})}>{step_file}</start>"
            ),
        ),
        ("getpause", listed("getpause", f"<getpause {a} />")),
        (
            "setpause",
            listed(
                "setpause",
                f"<setpause {_vanguard_attrs(c, {'cycleid': -1, 'stepid': -1, 'timeout': ''})} />",
            ),
        ),
        (
            "cancelpause",
            listed(
                "cancelpause",
                f"<cancelpause {_vanguard_attrs(c, {'cycleid': -1, 'stepid': -1})} />",
            ),
        ),
        ("continue", listed("continue", f"<continue {a}>true</continue>")),
        ("goto", listed("goto", f"<goto {_vanguard_attrs(c, {'step': 2})}>true</goto>")),
        ("chl_ctrl", listed("chl_ctrl", f"<chl_ctrl {a}>1</chl_ctrl>")),
        ("light", listed("light", f"<light {a}>true</light>")),
        ("parallel", listed("parallel", f"<parallel {a} />", list_attrs=' paralleltype="0"')),
        ("getparallel", listed("getparallel", f"<parallel {a} />")),
        ("resetalarm", listed("resetalarm", f"<resetalarm {a} />")),
        ("inquiredf", listed("inquiredf", f"<chl {_vanguard_attrs(c, {'testid': 0})}/>")),
        (
            "download",
            "<cmd>download</cmd>\n<download "
            + _vanguard_attrs(c, {"auxid": 0, "testid": 0, "startpos": 1, "count": 1000})
            + "/>",
        ),
        (
            "downloadStepLayer",
            "<cmd>downloadStepLayer</cmd>\n"
            f"<downloadStepLayer {_vanguard_attrs(c, {'testid': 0, 'dcir': 1})}/>\n"
            '<V1I1 previousstep="1" type="1" value=""/>\n'
            '<V2I2 previousstep="0" type="0" value=""/>',
        ),
        (
            "downloadlog",
            "<cmd>downloadlog</cmd>\n"
            f"<download {_vanguard_attrs(c, {'testid': 0, 'log_lever': 0})}/>",
        ),
        ("stop", listed("stop", f"<stop {a}>true</stop>")),
        ("clearflag", listed("clearflag", f"<clearflag {a} />")),
        (
            "reset",
            f"<cmd>reset</cmd>\n<reset {_vanguard_attrs(c, {'DBC_CAN': 0})}>{step_file}</reset>",
        ),
        (
            "broadcaststop",
            '<cmd>broadcaststop</cmd>\n<list count="1">\n'
            '<stop ip="127.0.0.1" devtype="27" devid="1">true</stop>\n</list>',
        ),
    ]
    return [(cmd, _vanguard_doc(body)) for cmd, body in bodies]


def _vanguard_read(buf: bytearray) -> bytes | None:
    """Vanguard-1 reads until </bts> and keeps one frame up to it."""
    end = buf.find(b"</bts>")
    return None if end < 0 else bytes(buf[: end + len(b"</bts>")])


# ---------------------------------------------------------------- Uni-Lab-OS


def _unilab_channels() -> list[tuple[int, int, int]]:
    """Its fixed map of 720 channels: devid 1-7 (units 1-10), 8 (units 11-20), 86."""
    out = [(d, s, c) for d in range(1, 8) for s in range(1, 11) for c in range(1, 9)]
    out += [(8, s, c) for s in range(11, 21) for c in range(1, 9)]
    out += [(86, s, c) for s in range(1, 11) for c in range(1, 9)]
    return out


def unilab_calls() -> list[Call]:
    channels = _unilab_channels()

    def doc(cmd: str, item: Callable[[tuple[int, int, int]], str]) -> bytes:
        lines = [
            '<?xml version="1.0" encoding="UTF-8" ?>',
            '<bts version="1.0">',
            f"<cmd>{cmd}</cmd>",
            f'<list count="{len(channels)}">',
            *(item(ch) for ch in channels),
            "</list>",
            "</bts>",
        ]
        return "\n".join(lines).encode("utf-8")

    def attrs(ch: tuple[int, int, int]) -> str:
        return f'ip="127.0.0.1" devtype="27" devid="{ch[0]}" subdevid="{ch[1]}" chlid="{ch[2]}"'

    return [
        ("getchlstatus", doc("getchlstatus", lambda ch: f"<status {attrs(ch)}>true</status>")),
        (
            "inquire",
            doc("inquire", lambda ch: f'<inquire {attrs(ch)} aux="0" barcode="0">true</inquire>'),
        ),
    ]


def _unilab_read(buf: bytearray) -> bytes | None:
    """Uni-Lab-OS reads until #\\r\\n (cut at its last one) or </bts>."""
    if b"#\r\n" in buf:
        return bytes(buf[: buf.rfind(b"#\r\n")])
    if b"</bts>" in buf:
        return bytes(buf[: buf.rfind(b"</bts>") + len(b"</bts>")])
    return None


# ---------------------------------------------------------------- the session


def _step_file(tmp_path: Path) -> str:
    program = GalvanostaticCycling(Cell.symmetric(0.785), cycles=5, record_interval_s=60.0)
    return str(write_step_file(tmp_path / "third-party.xml", program.to_step_file()))


@asynccontextmanager
async def _simulator() -> AsyncIterator[tuple[NewareSimulator, VirtualClock, int]]:
    clock = VirtualClock()
    # devid 1 with 10 units: the channels both byte-level clients name on device 1.
    sim = NewareSimulator(clock, units=10, epoch=EPOCH)
    async with sim.serve() as (_, port):
        yield sim, clock, port


async def _replay(
    port: int,
    calls: list[Call],
    framing: bytes,
    read: Callable[[bytearray], bytes | None],
    clock: VirtualClock,
) -> list[str]:
    """Send each call as the client frames it, read as it reads; the commands answered."""
    answered = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for cmd, document in calls:
            writer.write(document + framing)
            await writer.drain()
            buf = bytearray()
            reply = None
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                while reply is None:
                    chunk = await reader.read(65536)
                    assert chunk, f"{cmd}: the server hung up"
                    buf += chunk
                    reply = read(buf)
            # The rest of the frame (a reply ends with \n\n#\r\n) is drained as a client
            # reading whole TCP segments does.
            while not buf.endswith(b"\n\n#\r\n"):
                async with asyncio.timeout(REPLY_TIMEOUT_S):
                    buf += await reader.read(65536)
            got = re.search(rb"<cmd>([^<]*)</cmd>", reply)
            if got is not None and got.group(1).decode() == _expected_cmd(cmd):
                answered.append(cmd)
            clock.set(clock.now_s() + 600.0)  # the session runs: there is data to fetch
    finally:
        writer.close()
        await writer.wait_closed()
    return answered


@pytest.mark.parametrize("framing", FRAMINGS.values(), ids=FRAMINGS.keys())
async def test_every_vanguard_call_is_answered(framing: bytes, tmp_path: Path) -> None:
    calls = vanguard_calls(_step_file(tmp_path))
    async with _simulator() as (sim, clock, port):
        answered = await _replay(port, calls, framing, _vanguard_read, clock)
        assert sim.channels[next(iter(sim.channels))].test_id == 1  # its start was obeyed
    assert answered == [cmd for cmd, _ in calls]
    assert len(calls) == 22


@pytest.mark.parametrize("framing", FRAMINGS.values(), ids=FRAMINGS.keys())
async def test_every_unilab_call_is_answered(framing: bytes) -> None:
    calls = unilab_calls()
    async with _simulator() as (_, clock, port):
        answered = await _replay(port, calls, framing, _unilab_read, clock)
    assert answered == ["getchlstatus", "inquire"]


class _Tally:
    """aurora-neware calls made and the ones whose answer was right."""

    def __init__(self) -> None:
        self.done: list[str] = []

    def call(self, name: str, fn: Callable[[], Any], ok: Callable[[Any], bool]) -> None:
        if ok(fn()):
            self.done.append(name)


def _aurora_first_half(api: NewareAPI, tally: _Tally, step_file: str) -> None:
    api.connect()  # connect + getdevinfo
    tally.done += ["connect", "getdevinfo"] if "1-10-8" in api.channel_map else []
    ch = "1-1-1"
    tally.call(
        "getchlstatus", lambda: api.getchlstatus([ch]), lambda r: r[ch]["status"] == "finish"
    )
    tally.call("start", lambda: api.start(ch, "aurora", step_file), lambda r: r[0]["start"] == "ok")


def _aurora_second_half(api: NewareAPI, tally: _Tally) -> None:
    ch = "1-1-1"
    tally.call("getdevinfo", api.getdevinfo, lambda r: "1-10-8" in r)
    tally.call("inquire", lambda: api.inquire([ch]), lambda r: r[ch]["workstatus"] == "working")
    tally.call("inquiredf", lambda: api.inquiredf([ch]), lambda r: r[ch]["count"] > 1)
    tally.call("get_testid", lambda: api.get_testid([ch]), lambda r: r[ch]["test_id"] == 1)
    tally.call("light", lambda: api.light([ch]), lambda r: r[0]["light"] == "ok")
    tally.call("download", lambda: api.download(ch, 5), lambda r: len(r["seqid"]) == 5)
    tally.call("downloadlog", lambda: api.downloadlog(ch), lambda r: len(r) >= 1)
    tally.call("get_steps", lambda: api.get_steps(ch), lambda r: len(r) >= 1)
    tally.call("stop", lambda: api.stop([ch]), lambda r: r[0]["stop"] == "ok")
    tally.call("clearflag", lambda: api.clearflag([ch]), lambda r: r[0]["clearflag"] == "false")
    api.disconnect()


AURORA_CALLS = [
    "connect",
    "getdevinfo",
    "getchlstatus",
    "start",
    "getdevinfo",
    "inquire",
    "inquiredf",
    "get_testid",
    "light",
    "download",
    "downloadlog",
    "get_steps",
    "stop",
    "clearflag",
]


@pytest.mark.parametrize("termination", ["\n\n#\r\n", "#\r\n"], ids=["its own", "#CRLF"])
async def test_every_aurora_neware_call_works(tmp_path: Path, termination: str) -> None:
    """As published (</bts>\n\n#\r\n), and sending </bts>#\r\n as the API document
    has it (aurora then also reads up to #\r\n, which a reply ends with too)."""
    step_file = _step_file(tmp_path)
    tally = _Tally()
    async with _simulator() as (_, clock, port):
        api = NewareAPI("127.0.0.1", port)
        api.termination = termination
        # A reply that never comes fails the test instead of blocking its thread.
        api.neware_socket.settimeout(REPLY_TIMEOUT_S)
        await asyncio.to_thread(_aurora_first_half, api, tally, step_file)
        clock.set(3600.0)  # an hour of the test recorded
        await asyncio.to_thread(_aurora_second_half, api, tally)
    assert tally.done == AURORA_CALLS
