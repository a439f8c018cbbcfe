"""``cellguard status``: what the daemon left in its state_dir, read without it.

Only local state is read: the configuration (without its secrets, which a status
never needs and an operator's account may not be able to read), the state_dir's lock
(is a daemon running?) and the SQLite store, which is never created here. Every
configured channel is listed, also one the daemon has not touched yet ("idle").
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cellguard.daemon.config import ChannelSettings, Config
from cellguard.daemon.instance_lock import LOCK_FILENAME, holder
from cellguard.daemon.store import STORE_FILENAME, ChannelState, Store
from cellguard.drivers.clock import Clock, WallClock

IDLE = "idle"  # configured, but no state saved yet: the daemon never ran it
STATUS_COLUMNS = ("channel", "cell", "state", "cycle", "polarization mV", "last sample", "alerts")
LIST_COLUMNS = ("instrument", "channel", "state", "test", "last seq", "detail")
WATCH_WIDTH = 80  # a terminal's classic width: the watched table must fit it
_DETAIL_CHARS = 80


def daemon_line(config: Config) -> str:
    """ "daemon: running (PID 1234)" or "daemon: stopped", from the state_dir's lock."""
    state_dir = config.daemon.state_dir
    try:
        held_by = holder(state_dir)
    except OSError as err:  # e.g. an operator's account may not open the daemon's lock
        return f"daemon: unknown (cannot open {state_dir / LOCK_FILENAME}: {err.strerror or err})"
    if held_by is None:
        return f"daemon: stopped (no cellguard holds {state_dir})"
    return f"daemon: running ({held_by})"


def detail_text(detail: str) -> str:
    """A state's detail as a person reads it: a host-driven channel saves its restart
    position as JSON, whose ``detail`` is the text; the rest is not for the table."""
    if detail.startswith("{"):
        try:
            body = json.loads(detail)
        except json.JSONDecodeError:
            return detail[:_DETAIL_CHARS]
        if isinstance(body, dict):
            return str(body.get("detail", ""))[:_DETAIL_CHARS]
    return detail[:_DETAIL_CHARS]


async def _load_states(config: Config) -> dict[tuple[str, str], ChannelState]:
    if not (config.daemon.state_dir / STORE_FILENAME).is_file():
        return {}  # never ran: nothing to read, and nothing is created here
    async with Store(config.daemon.state_dir) as store:
        return await store.load_channel_states()


def status_rows(
    config: Config, states: dict[tuple[str, str], ChannelState]
) -> list[tuple[str, ...]]:
    """Rows of ``cellguard status`` (``LIST_COLUMNS``): every configured channel in file
    order, then any the store holds that the config no longer names."""
    rows: list[tuple[str, ...]] = []
    configured = set()
    for ch in config.channels:
        key = (ch.instrument, str(ch.channel))
        configured.add(key)
        s = states.get(key)
        if s is None:
            rows.append((*key, IDLE, "", "", "no state saved yet"))
        else:
            rows.append(_state_row(s))
    rows.extend(_state_row(s) for key, s in sorted(states.items()) if key not in configured)
    return rows


def _state_row(s: ChannelState) -> tuple[str, ...]:
    return (s.instrument, s.channel, s.state, s.test_id, str(s.last_seq), detail_text(s.detail))


async def print_status(config: Config, console: Console | None = None) -> None:
    """``cellguard status``: the daemon's state and one row per channel."""
    console = console or Console()
    states = await _load_states(config)
    table = Table(title=f"cellguard status ({config.daemon.state_dir})")
    for name in LIST_COLUMNS:
        table.add_column(name)
    for row in status_rows(config, states):
        table.add_row(*row)
    console.print(daemon_line(config), markup=False, highlight=False)
    console.print(table)


# -- `cellguard status --watch`: the table a person reads at a glance ------------------------


def _cell_label(ch: ChannelSettings) -> str:
    cell = ch.cell
    what = cell.interphase or ""
    if cell.type == "asymmetric" and cell.thin_li_um is not None:
        return f"{what} asym {cell.thick_li_um or 0:g}|{cell.thin_li_um:g}".strip()
    if cell.type == "symmetric":
        return f"{what} sym {cell.thick_li_um or 0:g}|{cell.thick_li_um or 0:g}".strip()
    return f"{what} {cell.type}".strip()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


async def live_status_rows(
    config: Config, store: Store | None, now_unix_s: float
) -> list[tuple[str, ...]]:
    """One row per configured channel (``STATUS_COLUMNS``), read from the store.

    Polarization is the latest cycle's against the first cycle's of the same test
    ("now (start)"); alerts count the test's halts and warns, the halt's fault named.
    ``store`` None: no store yet, every channel idle.
    """
    states = await store.load_channel_states() if store is not None else {}
    rows: list[tuple[str, ...]] = []
    for ch in config.channels:
        channel = str(ch.channel)
        state = states.get((ch.instrument, channel))
        if store is None or state is None:
            rows.append((f"{ch.instrument} {channel}", _cell_label(ch), IDLE, *("—",) * 4))
            continue
        test_id = state.test_id
        cycles = await store.query_cycles(ch.instrument, channel, test_id=test_id or None)
        last = await store.query_samples(ch.instrument, channel, limit=1)
        events = await store.query_events(ch.instrument, channel)
        if test_id:
            events = [e for e in events if e.tags.test_id == test_id]
        halts = [e for e in events if e.kind == "halt"]
        warns = sum(1 for e in events if e.kind == "warn")
        alerts = []
        if halts:
            alerts.append(f"halt: {halts[-1].fault or 'halt'}")
        if warns:
            alerts.append(f"{warns} warn")
        if cycles:
            pol = f"{cycles[-1].polarization_v * 1e3:.1f} ({cycles[0].polarization_v * 1e3:.1f})"
            cycle = str(cycles[-1].cycle)
        else:
            pol, cycle = "—", "—"
        rows.append(
            (
                f"{ch.instrument} {channel}",
                _cell_label(ch),
                state.state,
                cycle,
                pol,
                _age(now_unix_s - last[-1].time_unix_s if last else None),
                ", ".join(alerts) or "—",
            )
        )
    return rows


# Least widths from which a column may wrap (a header's longest word, a whole number
# pair); columns not named keep their text on one line.
_MIN_WIDTH = {"channel": 10, "cell": 9, "polarization mV": 12, "last sample": 7, "alerts": 8}
_GAP = 2  # the box's blank separator and one space of padding


def _widths(rows: Sequence[tuple[str, ...]], width: int) -> list[int]:
    """Column widths that fit ``width``: each column's natural width, then the widest
    wrapping column narrowed one character at a time (rich alone would squeeze the
    short ones to nothing and cut words)."""
    widths, contents = [], []
    for index, name in enumerate(STATUS_COLUMNS):
        content = max((len(row[index]) for row in rows), default=0)
        contents.append(max(content, *(len(word) for word in name.split())))
        widths.append(max(len(name), content))
    room = width - _GAP * (len(widths) - 1)
    # First wrap headers wider than their column's text: that costs no row a line.
    for i in range(len(widths)):
        excess = sum(widths) - room
        if excess > 0:
            widths[i] -= min(excess, widths[i] - contents[i])
    while sum(widths) > room:
        slack = [
            (widths[i] - _MIN_WIDTH[name], i)
            for i, name in enumerate(STATUS_COLUMNS)
            if name in _MIN_WIDTH and widths[i] > _MIN_WIDTH[name]
        ]
        if not slack:
            break  # narrower than the least widths: rich folds what remains
        widths[max(slack)[1]] -= 1
    return widths


def status_table(rows: Sequence[tuple[str, ...]], title: str, width: int = WATCH_WIDTH) -> Table:
    """The rich Table of ``cellguard status --watch``, laid out for ``width`` columns."""
    table = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        title_justify="left",
        show_edge=False,
        pad_edge=False,
        padding=(0, 0, 0, 1),  # with the box's blank separator: _GAP between columns
    )
    for name, column_width in zip(STATUS_COLUMNS, _widths(rows, width), strict=True):
        table.add_column(
            name,
            justify="right" if name == "cycle" else "left",
            width=column_width,
            overflow="fold",  # a long name is folded onto the next line, never cut off
        )
    for row in rows:
        style = "bold red" if row[-1].startswith("halt") else None
        table.add_row(*row, style=style)
    return table


async def watch_status(
    config: Config,
    *,
    interval_s: float = 2.0,
    count: int | None = None,
    clock: Clock | None = None,
    console: Any = None,
) -> None:
    """``cellguard status --watch``: the table refreshed in place every ``interval_s``.

    ``count`` stops after that many refreshes (None: until Ctrl+C). The table fits the
    terminal down to WATCH_WIDTH columns (long cells wrap, numbers never); not on a
    terminal, it is laid out for WATCH_WIDTH.
    """
    clock = clock or WallClock()
    if console is None:
        console = Console()
        if not console.is_terminal:  # a pipe or a log: no terminal width to fit
            console = Console(width=WATCH_WIDTH)
    done = 0
    async with contextlib.AsyncExitStack() as stack:
        store: Store | None = None
        with Live(console=console, auto_refresh=False) as live:
            while count is None or done < count:
                if store is None and (config.daemon.state_dir / STORE_FILENAME).is_file():
                    # Opened only once the daemon has made it: status creates nothing.
                    store = await stack.enter_async_context(Store(config.daemon.state_dir))
                rows = await live_status_rows(config, store, time.time())
                stamp = time.strftime("%H:%M:%S")
                title = f"{daemon_line(config)} — {stamp}"
                live.update(status_table(rows, title, console.width), refresh=True)
                done += 1
                if count is None or done < count:
                    await clock.sleep(interval_s)
