"""`cellguard simulate smu` serves the SMU client over a real pty pair, as a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from cellguard.drivers.smu import SmuClient


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A socat pty pair ``(host_end, instrument_end)``; socat is killed at teardown."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is required (apt-get install -y socat)")
    host, instrument = tmp_path / "host-tty", tmp_path / "instrument-tty"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={host}", f"pty,raw,echo=0,link={instrument}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # ready once socat relays
        if "starting data transfer loop" in line:
            break
    try:
        yield str(host), str(instrument)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def start_simulator(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cellguard.daemon.cli", "simulate", "smu", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_the_cli_simulator_answers_the_client_over_a_pty(
    ptys: tuple[str, str],
) -> None:
    host, instrument = ptys
    proc = start_simulator("--serial", instrument, "--speed", "3600", "--seed", "2")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the port is open
        assert f"MODEL 2400 (SCPI) on {instrument}" in line, (line, proc.stderr)
        assert "cell SEI-symmetric" in line
        async with SmuClient(host, timeout_s=5.0) as client:
            assert client.info is not None
            assert client.info.model == "2400"
            await client.source_current(0.3927e-3, compliance_v=5.0)
            measured = await client.measure()
            assert measured.output_on
            assert measured.current_a == pytest.approx(0.3927e-3)
            assert 0 < measured.voltage_v < 0.1  # a Li|Li cell polarising, not a short
            await client.output_off()
            rest = await client.measure()
            assert not rest.output_on
            assert rest.current_a == 0.0
            assert rest.t_s > measured.t_s
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # a clean shutdown on SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_port_that_cannot_be_opened_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tty"
    out = subprocess.run(
        [sys.executable, "-m", "cellguard.daemon.cli", "simulate", "smu", "--serial", str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("cellguard: error: cannot open the serial port")
    assert str(missing) in lines[0]


def test_bad_arguments_name_the_option() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellguard.daemon.cli",
            "simulate",
            "smu",
            "--serial",
            "x",
            "--cell",
            "LFP",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "--cell" in out.stderr
    assert "SEI-symmetric" in out.stderr


# ------------------------------------------------------------------ plain pyserial sessions

# A host program's usual 2400 commands (PyMeasure's, LabVIEW drivers'), in the forms they
# are written in: short, long, lower case, with and without the optional nodes.
SESSION: tuple[str, ...] = (
    "*RST",
    "*CLS",
    "*ESE 60",
    "*SRE 32",
    ":SENS:FUNC:CONC OFF",
    ':SENS:FUNC "VOLT"',
    ":SENSe:FUNCtion:CONCurrent ON",
    ":sense:function 'CURR:DC'",
    ":SENS:VOLT:RANG 2",
    ":SENS:VOLT:RANG:AUTO ON",
    ":SENS:CURR:RANG:AUTO 1",
    ":SOUR:CURR:RANG 1e-3",
    ":SOURce:CURRent:RANGe:AUTO ON",
    ":SENS:VOLT:NPLC 1",
    ":SENS:CURR:NPLCycles 0.1",
    ":TRIG:COUN 1",
    ":ARM:COUN 1",
    ":TRIGger:SEQuence:DELay 0",
    ":SENS:CURR:PROT 0.01",
    ":SENS:VOLT:PROT 5",
    ":FORM:ELEM VOLT,CURR,RES,TIME,STAT",
    ":SYST:BEEP:STAT OFF",
    ":DISP:ENAB ON",
    ":SOUR:FUNC CURR",
    ":SOUR:CURR:MODE FIX",
    ":SOUR:CURR:LEV 1e-3",
    ":OUTP ON",
    "*OPC",
    "*WAI",
    ":INIT",
    ":SENS:FUNC:OFF:ALL",
    ":STAT:MEAS:ENAB 512",
    ":STAT:PRES",
    ":SYST:TIME:RES",
)
QUERIES: tuple[tuple[str, str], ...] = (
    # (query, a regular expression its whole answer must match)
    ("*IDN?", r"KEITHLEY INSTRUMENTS INC\.,MODEL 2400,\d+,C30.*"),
    ("*ESE?", "60"),
    ("*SRE?", "32"),
    ("*OPC?", "1"),
    ("*ESR?", "1"),  # operation complete, from *OPC; nothing else since *CLS
    ("*STB?", "0"),
    (":SENS:FUNC:CONC?", "1"),
    (":SENS:VOLT:RANG?", r"\+2\.100000E\+00"),
    (":SENS:VOLT:RANG:AUTO?", "1"),  # set again after the range
    (":SOUR:CURR:RANG?", r"\+1\.050000E-03"),
    (":SENS:VOLT:NPLC?", r"\+1\.000000E-01"),  # one NPLC for every function
    (":TRIG:COUN?;:ARM:COUN?", r"\+1;\+1"),
    (":TRIG:DEL?", r"\+0\.000000E\+00"),
    (":SENS:VOLT:PROT?", r"\+5\.000000E\+00"),
    (":SENS:FUNC?", '""'),  # all off: an empty string
    (":MEAS:VOLT?", r"[+-][\d.]+E[+-]\d\d,\+1\.000000E-03,\+9\.910000E\+37,[^,]+,[^,]+"),
    (":MEAS:CURR?", r"[+-][\d.]+E[+-]\d\d,\+1\.000000E-03,\+9\.910000E\+37,[^,]+,[^,]+"),
    (":MEAS:RES?", r"([+-][\d.]+E[+-]\d\d,){4}[^,]+"),
    (":READ?", r"([+-][\d.]+E[+-]\d\d,){4}[^,]+"),
    (":FETC?", r"([+-][\d.]+E[+-]\d\d,){4}[^,]+"),
    (":SENS:VOLT:PROT:TRIP?", "0"),
    (":SENS:FUNC?", '"VOLT:DC","CURR:DC","RES"'),
    (":STAT:MEAS?", r"\d+"),
    (":STAT:MEAS:ENAB?", "0"),  # :STAT:PRES cleared it
    (":STAT:QUES:ENAB?;:STAT:OPER?", "0;0"),
    (":SYST:BEEP:STAT?;:DISP:ENAB?", "0;1"),
    (":SOUR:FUNC?;:SOUR:CURR:MODE?;:OUTP?", "CURR;FIX;1"),
    (":SOUR:CURR?", r"\+1\.000000E-03"),
    (":SYST:ERR:COUN?", r"\+0"),
    (":SYST:ERR?", '0,"No error"'),
)


def ask_line(port: serial.Serial, query: str) -> str:
    port.write(query.encode() + b"\n")
    return port.read_until(b"\r").decode().removesuffix("\r")


def test_a_plain_pyserial_session_runs_the_common_2400_commands_with_no_scpi_error(
    ptys: tuple[str, str],
) -> None:
    host, instrument = ptys
    proc = start_simulator("--serial", instrument, "--speed", "60", "--seed", "4")
    try:
        assert proc.stdout is not None
        assert "MODEL 2400 (SCPI)" in proc.stdout.readline()
        with serial.Serial(host, 9600, timeout=5) as port:
            for command in SESSION:
                port.write(command.encode() + b"\n")
            answers = [ask_line(port, query) for query, _ in QUERIES]
            # And a program that read nothing is told why: one entry per mistake.
            for wrong in (":SENS:VOLTA:RANG 2", ":SENS:CURR:NPLC 20", ":OUTP ON;;:OUTP?"):
                port.write(wrong.encode() + b"\n")
            errors = [ask_line(port, ":SYST:ERR?") for _ in range(4)]
            event_status = ask_line(port, "*ESR?")
        for (query, pattern), answer in zip(QUERIES, answers, strict=True):
            assert re.fullmatch(pattern, answer), (query, answer)
        assert errors == [
            '-113,"Undefined header"',
            '-222,"Parameter data out of range"',
            '-102,"Syntax error"',
            '0,"No error"',
        ]
        assert int(event_status) & (32 | 16) == 32 | 16  # command, execution error
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# ------------------------------------------------------------------ reconnects


def test_hosts_may_close_and_reopen_the_simulators_own_pty(tmp_path: Path) -> None:
    """``--serial pty:PATH``: the simulator makes the pty; every host that opens PATH is
    answered, and the instrument's state outlives the host that set it."""
    link = tmp_path / "k2400"
    proc = start_simulator("--serial", f"pty:{link}", "--speed", "60")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"MODEL 2400 (SCPI) on {link}" in line, (line, proc.stderr)
        with serial.Serial(str(link), 9600, timeout=5) as port:
            assert ask_line(port, "*IDN?").startswith("KEITHLEY")
            port.write(b":SOUR:CURR:LEV 1e-3;:OUTP ON\n")
            assert ask_line(port, "*OPC?") == "1"
        for _ in range(3):  # three more hosts, one after the other
            with serial.Serial(str(link), 9600, timeout=5) as port:
                assert ask_line(port, ":OUTP?") == "1"  # the output stayed on
                assert ask_line(port, ":SOUR:CURR?") == "+1.000000E-03"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not link.is_symlink()  # cleaned up
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def start_socat(host: Path, instrument: Path) -> subprocess.Popen[str]:
    socat = shutil.which("socat")
    assert socat is not None
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={host}", f"pty,raw,echo=0,link={instrument}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "starting data transfer loop" in line:
            break
    return proc


def answered_within(host: Path, timeout_s: float) -> bool:
    """Poll (bounded) until the port at ``host`` answers ``*IDN?``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with serial.Serial(str(host), 9600, timeout=0.5) as port:
            if ask_line(port, "*IDN?").startswith("KEITHLEY"):
                return True
    return False


def test_the_simulator_opens_its_serial_port_again_after_the_pty_pair_went_away(
    tmp_path: Path,
) -> None:
    """socat (or a USB adapter) goes away and comes back: the simulator answers again."""
    host, instrument = tmp_path / "host-tty", tmp_path / "instrument-tty"
    socat = start_socat(host, instrument)
    proc = start_simulator("--serial", str(instrument), "--speed", "60")
    try:
        assert proc.stdout is not None
        assert "MODEL 2400 (SCPI)" in proc.stdout.readline()
        assert answered_within(host, 5.0)
        socat.terminate()
        socat.communicate(timeout=10)
        socat = start_socat(host, instrument)
        assert answered_within(host, 15.0), "the simulator never answered on the new pty"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        socat.terminate()
        socat.communicate(timeout=10)
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
