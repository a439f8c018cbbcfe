"""SmuClient over a real pty pair (socat) against the simulated 2400 or a scripted peer.

The simulator runs in-process on a VirtualClock while every byte goes through the
kernel's pseudo-terminals, so the same client code meets the same wire as with a real
instrument. Nothing here sleeps to let time pass: the cell's time moves only when a
test advances the clock; waits are for bytes to arrive, bounded.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from cellguard.drivers.clock import VirtualClock
from cellguard.drivers.errors import (
    CommandRefused,
    ConfigError,
    DriverError,
    InstrumentConnectionError,
    InstrumentTimeout,
    ProtocolViolation,
)
from cellguard.drivers.galvanostat import Galvanostat
from cellguard.drivers.sim import SimCell, SimCellSpec
from cellguard.drivers.smu import (
    KNOWN_MODELS,
    UNKNOWN_MODEL,
    LineSplitter,
    SerialLink,
    SmuClient,
    SmuSimulator,
)

Rig = tuple[VirtualClock, SmuSimulator, SmuClient]
REAL_IDN = b"KEITHLEY INSTRUMENTS INC.,MODEL 2400,1234567,C30   Mar 17 2006 09:29:29/A02  /K/J"


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for bytes to have crossed the pty: not a timing assumption."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"never happened: {what}")
        await asyncio.sleep(0.001)


@asynccontextmanager
async def rig(
    pty_pair: tuple[str, str], *, timeout_s: float = 2.0, **sim_options: object
) -> AsyncIterator[Rig]:
    host, instrument = pty_pair
    clock = VirtualClock()
    simulator = SmuSimulator(clock, seed=7, **sim_options)  # type: ignore[arg-type]
    async with simulator.serve(instrument):
        client = SmuClient(host, timeout_s=timeout_s)
        try:
            await client.connect()
            yield clock, simulator, client
        finally:
            await client.close()


@asynccontextmanager
async def scripted(port: str, answer: Callable[[bytes], bytes | None]) -> AsyncIterator[None]:
    """A peer on ``port`` that answers each received line with ``answer(line)``."""
    splitter = LineSplitter()
    link: SerialLink | None = None

    def on_data(data: bytes) -> None:
        for line in splitter.feed(data):
            reply = answer(line)
            if reply is not None and link is not None:
                link.write(reply)

    link = await SerialLink.open(port, on_data=on_data, on_lost=lambda _: None, timeout_s=5.0)
    try:
        yield
    finally:
        await link.aclose()


def healthy_2400(
    read_reply: bytes = b"+1.0E-02,+1.0E-03,+5.0E+00,+0.0E+00",
) -> Callable[[bytes], bytes | None]:
    def answer(line: bytes) -> bytes | None:
        return {
            b"*IDN?": REAL_IDN + b"\r",
            b":SYST:ERR?": b'0,"No error"\r',
            b":OUTP?": b"0\r",
            b":READ?": read_reply + b"\r",
        }.get(line)

    return answer


# ------------------------------------------------------------------ identify


async def test_connect_identifies_the_2400_and_reports_its_limits(
    pty_pair: tuple[str, str],
) -> None:
    async with rig(pty_pair) as (_, simulator, client):
        assert isinstance(client, Galvanostat)
        info = client.info
        assert info is not None
        assert (info.vendor, info.model, info.serial) == (
            "KEITHLEY INSTRUMENTS INC.",
            "2400",
            "1234567",
        )
        assert info.firmware.startswith("C30")
        assert (info.current_range_a, info.voltage_range_v) == (1.05, 21.0)
        assert simulator.elements == ("VOLT", "CURR", "TIME", "STAT")  # :FORM:ELEM was set


async def test_an_unknown_model_gets_conservative_limits(pty_pair: tuple[str, str]) -> None:
    async with rig(pty_pair, model="6430") as (_, _, client):
        assert client.info is not None
        assert client.info.model == "6430"
        assert "6430" not in KNOWN_MODELS
        assert client.info.current_range_a == UNKNOWN_MODEL.current_range_a
        with pytest.raises(ConfigError, match=r"current_a: must be within ±0.1 A on a 6430"):
            await client.source_current(0.5, compliance_v=5.0)


@pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n", b"\n\r"])
async def test_every_reply_terminator_setting_works(
    pty_pair: tuple[str, str], terminator: bytes
) -> None:
    async with rig(pty_pair, terminator=terminator) as (clock, _, client):
        await client.source_current(1e-3, compliance_v=5.0)
        await clock.advance(60.0)
        assert (await client.measure()).current_a == pytest.approx(1e-3)
        await client.output_off()


async def test_a_reconnect_never_disturbs_a_running_output(pty_pair: tuple[str, str]) -> None:
    async with rig(pty_pair) as (clock, simulator, client):
        await client.source_current(0.4e-3, compliance_v=5.0)
        await client.close()
        simulator.handle_line(b":BOGUS")  # an error left in the queue meanwhile
        await clock.advance(600.0)
        again = SmuClient(pty_pair[0])
        try:
            await again.connect()  # no *RST, no *CLS
            assert simulator.output_on
            assert simulator.current_level_a == pytest.approx(0.4e-3)
            assert simulator.errors == ()  # read and logged, not a refusal
            measured = await again.measure()
            assert measured.output_on
            assert measured.current_a == pytest.approx(0.4e-3)
        finally:
            await again.close()


# ------------------------------------------------------------------ sourcing


async def test_the_voltage_follows_the_simulated_cell_as_time_advances(
    pty_pair: tuple[str, str],
) -> None:
    """The reading is the cell's own voltage: an identical cell fed the same current in
    the simulator's 10 s steps gives the same numbers, to the 2400's 7 digits."""
    twin = SimCell(SimCellSpec(interphase="SEI"), 7)
    async with rig(pty_pair) as (clock, _, client):
        current_a = 0.3927e-3  # 0.5 mA cm⁻² on the 10 mm disc
        await client.source_current(current_a, compliance_v=5.0)
        expected_v = 0.0
        for minute in range(1, 6):
            await clock.advance(600.0)
            for _ in range(60):
                expected_v = twin.advance(10.0, current_a)
            measured = await client.measure()
            assert measured.t_s == pytest.approx(600.0 * minute)
            assert measured.current_a == pytest.approx(current_a)
            assert measured.voltage_v == pytest.approx(expected_v, rel=1e-6)
            assert measured.output_on
        assert measured.voltage_v > 0.005  # an SEI cell polarises by ~12 mV here
        await client.source_current(-current_a, compliance_v=5.0)
        await clock.advance(600.0)
        assert (await client.measure()).voltage_v < -0.005  # the sign follows the current
        assert client.mode == "current"


async def test_compliance_clamps_the_voltage_and_sets_status_bit_3(
    pty_pair: tuple[str, str],
) -> None:
    async with rig(pty_pair) as (clock, _, client):
        await client.source_current(20e-3, compliance_v=0.2)  # would need ~0.6 V
        await clock.advance(300.0)
        measured = await client.measure()
        assert measured.voltage_v == pytest.approx(0.2)
        assert client.last_reading is not None
        assert client.last_reading.compliance
        await client.source_current(0.1e-3, compliance_v=0.2)
        await clock.advance(300.0)
        await client.measure()
        assert not client.last_reading.compliance


async def test_a_full_cell_in_compliance_is_held_at_the_limit_with_less_current(
    pty_pair: tuple[str, str],
) -> None:
    async with rig(pty_pair, cell="full") as (clock, _, client):
        await client.source_current(10e-3, compliance_v=4.0)
        for _ in range(12):
            await clock.advance(300.0)
        measured = await client.measure()
        assert measured.voltage_v == pytest.approx(4.0, abs=1e-3)
        assert 0 < measured.current_a < 10e-3
        assert client.last_reading is not None
        assert client.last_reading.compliance


async def test_voltage_source_holds_a_full_cell(pty_pair: tuple[str, str]) -> None:
    async with rig(pty_pair, cell="full") as (clock, simulator, client):
        await client.source_voltage(3.9, compliance_a=50e-3)
        await clock.advance(120.0)
        measured = await client.measure()
        assert measured.voltage_v == pytest.approx(3.9, abs=2e-3)
        assert measured.current_a > 0  # charging towards 3.9 V
        assert simulator.function == "VOLT"
        assert client.mode == "voltage"


async def test_a_refused_setting_raises_with_the_instruments_error_and_stays_off(
    pty_pair: tuple[str, str],
) -> None:
    async with rig(pty_pair) as (_, simulator, client):  # a Li|Li cell: no voltage mode
        with pytest.raises(CommandRefused, match=r'-221,"Settings conflict"'):
            await client.source_voltage(0.1, compliance_a=1e-3)
        assert not simulator.output_on
        assert client.mode == "off"


async def test_setpoints_outside_the_models_limits_are_refused_before_sending(
    pty_pair: tuple[str, str],
) -> None:
    async with rig(pty_pair) as (_, simulator, client):
        served = simulator.lines_served
        with pytest.raises(ConfigError, match=r"current_a: must be within ±1.05 A on a 2400"):
            await client.source_current(2.0, compliance_v=5.0)
        with pytest.raises(ConfigError, match="compliance_v: must be > 0"):
            await client.source_current(1e-3, compliance_v=0.0)
        with pytest.raises(ConfigError, match="voltage_v"):
            await client.source_voltage(float("nan"), compliance_a=1e-3)
        assert simulator.lines_served == served


# ------------------------------------------------------------------ the halt


async def test_output_off_is_confirmed_and_idempotent(pty_pair: tuple[str, str]) -> None:
    async with rig(pty_pair) as (clock, simulator, client):
        await client.source_current(1e-3, compliance_v=5.0)
        assert simulator.output_on
        await client.output_off()
        assert not simulator.output_on
        await client.output_off()
        await asyncio.gather(client.output_off(), client.output_off())
        await clock.advance(60.0)
        rest = await client.measure()
        assert not rest.output_on
        assert rest.current_a == 0.0
        assert abs(rest.voltage_v) < 1e-3  # a Li|Li cell rests at ~0 V
        assert client.mode == "off"


async def test_the_halt_is_not_queued_behind_a_query_the_instrument_is_busy_with(
    pty_pair: tuple[str, str],
) -> None:
    async with rig(pty_pair) as (_, simulator, client):
        await client.source_current(1e-3, compliance_v=5.0)
        received = simulator.lines_received
        simulator.hold()  # busy, as during a long measurement
        measuring = asyncio.create_task(client.measure())
        await until(lambda: simulator.lines_received > received, ":READ? reached the instrument")
        halting = asyncio.create_task(client.output_off())
        # The measurement gives way at once, although its answer has not come.
        with pytest.raises(DriverError, match="interrupted by output_off"):
            await measuring
        await until(lambda: simulator.lines_received >= received + 3, "the halt was written")
        assert not halting.done()  # nobody has confirmed yet
        simulator.release()
        await halting  # the late :READ? answer was told apart from the confirmation
        assert not simulator.output_on
        measured = await client.measure()  # the link is still in step
        assert not measured.output_on
        assert measured.current_a == 0.0


async def test_the_halt_skips_a_query_the_instrument_never_answers(
    pty_pair: tuple[str, str],
) -> None:
    async with rig(pty_pair) as (_, simulator, client):
        await client.source_current(1e-3, compliance_v=5.0)
        simulator.drop_queries.add("READ")  # garbled on the way: no answer ever
        served = simulator.lines_served
        measuring = asyncio.create_task(client.measure())
        await until(lambda: simulator.lines_served > served, ":READ? was swallowed")
        await client.output_off()
        assert not simulator.output_on
        with pytest.raises(DriverError, match="interrupted by output_off"):
            await measuring
        simulator.drop_queries.clear()
        assert not (await client.measure()).output_on


async def test_the_halt_runs_to_its_end_when_the_caller_is_cancelled(
    pty_pair: tuple[str, str],
) -> None:
    async with rig(pty_pair) as (_, simulator, client):
        await client.source_current(1e-3, compliance_v=5.0)
        received = simulator.lines_received
        simulator.hold()
        halting = asyncio.create_task(client.output_off())
        await until(lambda: simulator.lines_received >= received + 2, "the halt was written")
        halting.cancel()
        for _ in range(20):
            await asyncio.sleep(0)
        assert not halting.done()  # still waiting for its confirmation, cancelled or not
        simulator.release()
        with pytest.raises(asyncio.CancelledError):
            await halting
        assert not simulator.output_on
        assert client.mode == "off"  # it was confirmed before the cancellation went on


async def test_a_task_being_cancelled_can_still_halt(pty_pair: tuple[str, str]) -> None:
    async with rig(pty_pair) as (_, simulator, client):
        await client.source_current(1e-3, compliance_v=5.0)
        started = asyncio.Event()

        async def channel_task() -> None:
            try:
                started.set()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await client.output_off()  # cleanup of a cancelled task
                raise

        task = asyncio.create_task(channel_task())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not simulator.output_on


async def test_a_setpoint_overtaken_by_a_halt_never_turns_the_output_on(
    pty_pair: tuple[str, str],
) -> None:
    async with rig(pty_pair) as (_, simulator, client):
        received = simulator.lines_received
        simulator.hold()
        sourcing = asyncio.create_task(client.source_current(1e-3, compliance_v=5.0))
        await until(lambda: simulator.lines_received > received, "the setpoint began")
        halting = asyncio.create_task(client.output_off())
        with pytest.raises(DriverError, match="output_off"):
            await sourcing
        simulator.release()
        await halting
        assert not simulator.output_on
        assert simulator.current_level_a == 0.0  # nothing of the setpoint was sent


async def test_the_halt_reopens_a_closed_link(pty_pair: tuple[str, str]) -> None:
    async with rig(pty_pair) as (_, simulator, client):
        await client.source_current(1e-3, compliance_v=5.0)
        await client.close()
        await client.output_off()
        assert not simulator.output_on


# ------------------------------------------------------------------ failures


async def test_a_timeout_names_the_command_and_leaves_the_link_usable(
    pty_pair: tuple[str, str],
) -> None:
    async with rig(pty_pair, timeout_s=0.3) as (_, simulator, client):
        await client.source_current(1e-3, compliance_v=5.0)
        simulator.drop_queries.add("READ")
        with pytest.raises(InstrumentTimeout, match=r"did not answer :READ\? within 0.3 s"):
            await client.measure()
        simulator.drop_queries.clear()
        assert (await client.measure()).output_on
        await client.output_off()
        assert not simulator.output_on


async def test_nobody_answering_is_a_timeout_naming_the_query(
    pty_pair: tuple[str, str],
) -> None:
    client = SmuClient(pty_pair[0], timeout_s=0.2)  # no simulator on the other end
    with pytest.raises(InstrumentTimeout, match=r"\*IDN\?") as info:
        await client.connect()
    assert pty_pair[0] in str(info.value)
    assert not client.connected
    with pytest.raises(InstrumentTimeout, match="did not confirm :OUTP OFF"):
        await client.output_off()
    await client.close()


async def test_a_missing_port_is_a_connection_error_naming_it() -> None:
    client = SmuClient("/dev/cellguard-no-such-tty", timeout_s=1.0)
    with pytest.raises(InstrumentConnectionError, match="/dev/cellguard-no-such-tty"):
        await client.connect()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"socket://127.0.0.1:{port}"  # nobody listens there
    with pytest.raises(InstrumentConnectionError, match=url):
        await SmuClient(url, timeout_s=1.0).connect()
    with pytest.raises(ConfigError, match="port"):
        await SmuClient("nosuch://x", timeout_s=1.0).connect()


async def test_calls_before_connect_say_so(pty_pair: tuple[str, str]) -> None:
    client = SmuClient(pty_pair[0])
    with pytest.raises(InstrumentConnectionError, match="call connect"):
        await client.measure()
    with pytest.raises(ConfigError, match="timeout_s"):
        SmuClient(pty_pair[0], timeout_s=0)
    with pytest.raises(ConfigError, match="baudrate"):
        SmuClient(pty_pair[0], baudrate=9601)


async def test_a_malformed_identity_is_a_protocol_violation(pty_pair: tuple[str, str]) -> None:
    def answer(line: bytes) -> bytes | None:
        return b"garbage without fields\r" if line == b"*IDN?" else None

    async with scripted(pty_pair[1], answer):
        client = SmuClient(pty_pair[0], timeout_s=1.0)
        with pytest.raises(ProtocolViolation, match=r"expected an \*IDN\? answer.*garbage"):
            await client.connect()
        assert not client.connected


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"+1.0E-02,+1.0E-03,+5.0E+00", "got 3 field"),
        (b"+1.0E-02,oops,+5.0E+00,+0.0E+00", "CURR is not a number"),
        (b"\x8f\xa0\xff,1,2,3", "non-ASCII"),
    ],
)
async def test_a_malformed_reading_is_a_protocol_violation(
    pty_pair: tuple[str, str], reply: bytes, match: str
) -> None:
    async with scripted(pty_pair[1], healthy_2400(reply)):
        client = SmuClient(pty_pair[0], timeout_s=1.0)
        await client.connect()
        try:
            with pytest.raises(ProtocolViolation, match=match):
                await client.measure()
            with pytest.raises(ProtocolViolation, match=match):  # still in step: same again
                await client.measure()
        finally:
            await client.close()


async def test_a_line_without_end_is_a_protocol_violation(pty_pair: tuple[str, str]) -> None:
    def answer(line: bytes) -> bytes | None:
        if line == b":READ?":
            return b"9" * 5000
        return healthy_2400()(line)

    async with scripted(pty_pair[1], answer):
        client = SmuClient(pty_pair[0], timeout_s=1.0)
        await client.connect()
        try:
            with pytest.raises(ProtocolViolation, match="no line terminator"):
                await client.measure()
        finally:
            await client.close()


async def test_over_a_tcp_serial_bridge_url(pty_pair: tuple[str, str]) -> None:
    clock = VirtualClock()
    simulator = SmuSimulator(clock, seed=1)
    async with simulator.serve("socket://127.0.0.1:0") as where:
        assert where.startswith("socket://127.0.0.1:")
        async with SmuClient(where) as client:
            await client.source_current(1e-3, compliance_v=5.0)
            await clock.advance(60.0)
            assert (await client.measure()).current_a == pytest.approx(1e-3)
            await client.output_off()
            assert not simulator.output_on


async def test_connect_turns_on_voltage_and_current_measurement(
    pty_pair: tuple[str, str],
) -> None:
    """A 2400 after *RST measures current only; the client asks for voltage too, and a
    reading of 9.91E+37 (a function turned off behind its back) is an error, not volts."""
    clock = VirtualClock()
    simulator = SmuSimulator(clock, seed=7)
    simulator.handle_line(b"*RST")
    async with simulator.serve(pty_pair[1]), SmuClient(pty_pair[0], timeout_s=2.0) as client:
        assert simulator.sense_functions == {"VOLT", "CURR"}
        await client.source_current(1e-3, compliance_v=5.0)
        await clock.advance(60.0)
        measured = await client.measure()
        assert 0 < measured.voltage_v < 0.1
        simulator.handle_line(b':SENS:FUNC:OFF "VOLT"')
        with pytest.raises(ProtocolViolation, match=r"did not measure VOLT .*9\.91E\+37"):
            await client.measure()
