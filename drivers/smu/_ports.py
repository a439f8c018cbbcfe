"""Where the simulated 2400 listens: a serial device that it keeps open, or a pty of its own.

A real 2400 on RS-232 does not care who opens the other end of the cable, how often,
or whether the cable was pulled for a while; the simulator must not either.

* :func:`serial_lines` opens a serial device (one end of a socat pty pair, a USB
  adapter). When the device goes away (socat restarted, adapter unplugged) it logs that
  once and opens it again with a capped backoff, then logs the recovery, instead of
  going deaf.
* :func:`pty_lines` makes its own pseudo-terminal and points a symlink at it, so a host
  program opens ``PATH`` like a serial device, with no socat. The simulator holds the
  terminal side open itself: when a host closes its end, the controlling side never
  sees a hang-up, and the next host to open ``PATH`` is answered. Replies a host did
  not read before it closed stay in the line, as they do in a USB adapter's buffer
  (hosts clear their input buffer after opening a port for that reason).

Both yield a function that writes a reply, and call ``deliver`` with each received line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from cellguard.drivers.errors import CellguardError, ConfigError, ProtocolViolation
from cellguard.drivers.smu._scpi import LineSplitter
from cellguard.drivers.smu._transport import SerialLink, SerialSettings

__all__ = ["PTY_PREFIX", "pty_lines", "pty_path", "serial_lines"]

log = logging.getLogger(__name__)

PTY_PREFIX = "pty:"
"""``pty:PATH`` asks the simulator for a pty of its own, linked at ``PATH``."""
_OPEN_TIMEOUT_S = 10.0
_REOPEN_FIRST_S = 0.05
_REOPEN_MAX_S = 2.0

Write = Callable[[bytes], None]


def _feeder(where: str, deliver: Callable[[bytes], None]) -> tuple[LineSplitter, Write]:
    splitter = LineSplitter()

    def feed(data: bytes) -> None:
        try:
            for line in splitter.feed(data):
                deliver(line)
        except ProtocolViolation as err:
            log.warning("SMU simulator on %s: %s", where, err)

    return splitter, feed


@contextlib.asynccontextmanager
async def serial_lines(
    port: str, settings: SerialSettings, deliver: Callable[[bytes], None]
) -> AsyncIterator[Write]:
    """Serve on the serial device ``port``, opening it again whenever it is lost.

    The first open fails loudly (a wrong path is the user's to fix); later ones retry.
    """
    splitter, feed = _feeder(port, deliver)
    lost = asyncio.Event()

    def on_lost(exc: Exception | None) -> None:
        if exc is not None:
            log.warning("SMU simulator: lost %s: %s; opening it again", port, exc)
            lost.set()

    async def open_link() -> SerialLink:
        return await SerialLink.open(
            port, on_data=feed, on_lost=on_lost, settings=settings, timeout_s=_OPEN_TIMEOUT_S
        )

    current = [await open_link()]

    async def keep_open() -> None:
        while True:
            await lost.wait()
            lost.clear()
            await current[0].aclose()
            splitter.reset()  # a line cut by the loss is no command
            delay_s = _REOPEN_FIRST_S
            failures = 0
            while True:
                try:
                    current[0] = await open_link()
                    break
                except CellguardError as err:
                    failures += 1
                    if failures == 1:
                        log.warning("SMU simulator: cannot open %s again yet: %s", port, err)
                # Waiting for a device to come back: a backoff, not a timing assumption.
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, _REOPEN_MAX_S)
            log.info("SMU simulator: %s open again after %d failed tries", port, failures)

    def write(data: bytes) -> None:
        current[0].write(data)

    keeper = asyncio.create_task(keep_open(), name=f"smu-sim reopen {port}")
    try:
        yield write
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await current[0].aclose()


def pty_path(port: str) -> Path:
    """The link path of ``pty:PATH`` (``pty://PATH`` too)."""
    path = port.removeprefix(PTY_PREFIX)
    if path.startswith("//"):
        path = path[2:]
    if not path:
        raise ConfigError(field="port", problem="pty: needs a path for the link, e.g. pty:/tmp/smu")
    return Path(path)


def _open_pty(link: Path) -> tuple[int, int, str]:
    """A new pty, raw, linked at ``link``: (controller fd, terminal fd, terminal name)."""
    if link.is_symlink():
        link.unlink()  # left by an earlier run that was killed
    elif link.exists():
        raise ConfigError(
            field="port", problem=f"{link} exists and is not a symlink; name a new path"
        )
    if not link.parent.is_dir():
        raise ConfigError(field="port", problem=f"{link.parent} is not a directory")
    controller, terminal = os.openpty()
    tty.setraw(terminal)  # no echo, no line editing: bytes pass as on a serial line
    os.set_blocking(controller, False)
    name = os.ttyname(terminal)
    os.symlink(name, link)
    return controller, terminal, name


def _close_pty(link: Path, controller: int, terminal: int, name: str) -> None:
    os.close(controller)
    os.close(terminal)
    with contextlib.suppress(OSError):
        if os.readlink(link) == name:  # not one a later run made
            link.unlink()


@contextlib.asynccontextmanager
async def pty_lines(link: Path, deliver: Callable[[bytes], None]) -> AsyncIterator[Write]:
    """Serve on a new pty whose terminal side is linked at ``link``."""
    controller, terminal, terminal_name = _open_pty(link)
    _, feed = _feeder(str(link), deliver)
    loop = asyncio.get_running_loop()

    def on_readable() -> None:
        try:
            data = os.read(controller, 4096)
        except BlockingIOError:
            return
        except OSError as err:  # not expected while the terminal side is held open
            log.warning("SMU simulator: reading %s: %s", link, err)
            return
        feed(data)

    dropping = [False]  # log the first reply dropped, not every one

    def write(data: bytes) -> None:
        try:
            sent = os.write(controller, data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            dropping[0] = False
        elif not dropping[0]:
            dropping[0] = True
            # Nobody has read the line for a long while: a real UART drops bytes too.
            log.info("SMU simulator: nobody reads %s; reply bytes dropped until it does", link)

    loop.add_reader(controller, on_readable)
    try:
        yield write
    finally:
        loop.remove_reader(controller)
        _close_pty(link, controller, terminal, terminal_name)
