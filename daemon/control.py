"""The local control path: operator commands to the running daemon without MQTT.

A lab's first day often has no broker. ``cellguard protocol start`` (and any local
tool) can then talk to the daemon on the same machine through a Unix socket in its
state_dir, ``state_dir/control/cellguard.sock``. Only the daemon's own user may:

- the ``control`` folder is 0700 and must be owned by the daemon's user (else the
  daemon refuses to serve it, naming the folder), the socket is 0600;
- the daemon asks the kernel who connected (``SO_PEERCRED``) and answers any other
  user than itself or root with a refusal, so a permission mistake on the folder
  still does not let another account start or stop cells.

One request per connection, one JSON line each way. The request names the instrument
and channel and carries the command body MQTT carries (``action``, ``request_id``,
optional ``protocol``), validated by the same :func:`~cellguard.daemon.mqtt.parse_command`;
the answer is the body MQTT's ``command_result`` carries (``request_id``, ``action``,
``ok``, ``detail``).

Windows has no Unix sockets in asyncio's proactor loop: there the path is not served
(the daemon logs it once) and commands go through MQTT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from cellguard.daemon.mqtt import Command, CommandRejected, parse_command
from cellguard.drivers.errors import CellguardError

log = logging.getLogger(__name__)

__all__ = ["CONTROL_DIR", "ControlError", "control_socket_path", "send_command", "serve_control"]

CONTROL_DIR = "control"
SOCKET_NAME = "cellguard.sock"
# A protocol script (64 KiB at most, as on MQTT) with its JSON envelope.
_MAX_REQUEST_BYTES = 128 * 1024
_READ_TIMEOUT_S = 10.0
# Linux refuses longer socket paths; a longer state_dir is reached through its fd.
_MAX_SUN_PATH = 100
_PREFIX = "local"  # the topic prefix parse_command is given: never on a broker

Execute = Callable[[Command], Awaitable[tuple[bool, str]]]


class ControlError(CellguardError):
    """The local control path cannot be used (no daemon, wrong owner, bad answer)."""


def control_socket_path(state_dir: Path) -> Path:
    """Where the daemon of ``state_dir`` listens."""
    return state_dir / CONTROL_DIR / SOCKET_NAME


@contextlib.contextmanager
def _short_address(path: Path) -> Any:
    """``path`` as a socket address the kernel accepts (≤ ~100 bytes): long paths go
    through ``/proc/self/fd`` of their folder (Linux)."""
    if len(os.fsencode(path)) <= _MAX_SUN_PATH or not Path("/proc/self/fd").is_dir():
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _check_folder(folder: Path) -> None:
    """The control folder exists, belongs to this user and no one else may enter it."""
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        msg = f"{folder} is not a folder; remove it so the daemon can make its control folder"
        raise ControlError(msg)
    if info.st_uid != os.getuid():
        msg = (
            f"{folder} belongs to uid {info.st_uid}, not to this user (uid {os.getuid()}): "
            "the local control path is served only from a folder of the daemon's own user"
        )
        raise ControlError(msg)
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)  # ours: close it to the group and others


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid of the connected process (Linux ``SO_PEERCRED``); None where unknown."""
    sock = writer.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def _answer(action: object, request_id: object, ok: bool, detail: str) -> bytes:
    body = {"request_id": request_id, "action": action, "ok": ok, "detail": detail}
    return json.dumps(body, sort_keys=True).encode() + b"\n"


def parse_request(line: bytes) -> Command | CommandRejected:
    """A request line as a command, or why not (pure)."""
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return CommandRejected("", "", "the request is not JSON")
    if not isinstance(body, dict):
        return CommandRejected("", "", "the request must be a JSON object")
    instrument, channel = body.pop("instrument", None), body.pop("channel", None)
    raw_id, raw_action = body.get("request_id"), body.get("action")
    request_id = raw_id if isinstance(raw_id, str) else None
    action = raw_action if isinstance(raw_action, str) else None
    for name, value in (("instrument", instrument), ("channel", channel)):
        if not isinstance(value, str) or not value or "/" in value or "+" in value:
            reason = f"{name} must be a name from the config (no '/', '+'), got {value!r}"
            return CommandRejected("", "", reason, request_id, action)
    topic = f"{_PREFIX}/command/{instrument}/{channel}"
    parsed = parse_command(_PREFIX, topic, json.dumps(body).encode())
    assert parsed is not None  # the topic is a command topic by construction
    return parsed


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, execute: Execute
) -> None:
    try:
        # Read first, judge after: the client gets its answer instead of a broken pipe.
        async with asyncio.timeout(_READ_TIMEOUT_S):
            line = await reader.readline()
        parsed = parse_request(line)
        uid = _peer_uid(writer)
        if uid is not None and uid not in (os.getuid(), 0):
            log.warning("local command from uid %d refused (not the daemon's user)", uid)
            named = parsed.action if isinstance(parsed, Command) else None
            writer.write(_answer(named, None, False, "refused: not the daemon's user"))
            return
        if isinstance(parsed, CommandRejected):
            writer.write(_answer(parsed.action, parsed.request_id, False, parsed.reason))
            return
        log.info(
            "local command %s for %s/%s (request %s)",
            parsed.action,
            parsed.instrument,
            parsed.channel,
            parsed.request_id,
        )
        ok, detail = await execute(parsed)
        writer.write(_answer(parsed.action, parsed.request_id, ok, detail))
    except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError) as err:
        log.info("local command connection dropped: %s", err)
    finally:
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve_control(
    state_dir: Path, execute: Execute, *, ready: asyncio.Event | None = None
) -> None:
    """Serve the local control path until cancelled (see the module doc).

    Only one daemon holds a state_dir (its lock), so a socket file found here is
    stale: it is replaced.
    """
    if sys.platform == "win32" or not hasattr(socket, "AF_UNIX"):  # pragma: no cover
        log.warning("no local control path on this platform: commands go through MQTT")
        return
    folder = state_dir / CONTROL_DIR
    path = folder / SOCKET_NAME

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(reader, writer, execute)

    try:
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        _check_folder(folder)
        path.unlink(missing_ok=True)
        with _short_address(path) as address:
            server = await asyncio.start_unix_server(on_connect, address, limit=_MAX_REQUEST_BYTES)
    except (ControlError, OSError) as err:
        # The guard goes on without it: local commands are a convenience, halts are not.
        log.error("local control path not served: %s", err)  # noqa: TRY400
        return
    try:
        os.chmod(path, 0o600)
        log.info("local control path on %s", path)
        if ready is not None:
            ready.set()
        async with server:
            await server.serve_forever()
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


async def send_command(
    state_dir: Path,
    instrument: str,
    channel: str,
    body: dict[str, Any],
    *,
    timeout_s: float,
) -> dict[str, Any]:
    """Send one command to the daemon of ``state_dir``; its answer (a dict with ``ok``,
    ``detail``, ``action``, ``request_id``). Raises :class:`ControlError` with one line
    that says what to do when no daemon answers."""
    path = control_socket_path(state_dir)
    folder = path.parent
    try:
        info = folder.lstat()
    except FileNotFoundError:
        msg = f"no cellguard daemon serves {state_dir} (no {folder}): is it running?"
        raise ControlError(msg) from None
    if info.st_uid not in (os.getuid(), 0) and os.getuid() != 0:
        msg = f"{folder} belongs to uid {info.st_uid}: run this as the daemon's user"
        raise ControlError(msg)
    request = json.dumps({"instrument": instrument, "channel": channel, **body}).encode() + b"\n"
    try:
        async with _connected(path, timeout_s) as (reader, writer):
            writer.write(request)
            await writer.drain()
            async with asyncio.timeout(timeout_s):
                line = await reader.readline()
    except (FileNotFoundError, ConnectionRefusedError):
        msg = f"no cellguard daemon is listening on {path}: is it running?"
        raise ControlError(msg) from None
    except PermissionError:
        msg = f"{path} is not open to this user: run this as the daemon's user"
        raise ControlError(msg) from None
    except TimeoutError:
        msg = f"the daemon on {path} did not answer within {timeout_s:g} s"
        raise ControlError(msg) from None
    try:
        answer = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        answer = None
    if not isinstance(answer, dict) or "ok" not in answer:
        msg = f"the daemon on {path} closed the connection without an answer"
        raise ControlError(msg)
    return answer


@contextlib.asynccontextmanager
async def _connected(
    path: Path, timeout_s: float
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    with _short_address(path) as address:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(address, limit=_MAX_REQUEST_BYTES)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
