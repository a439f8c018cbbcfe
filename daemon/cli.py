"""The ``cellguard`` command line.

Exit codes of ``cellguard run`` (the shipped systemd unit restarts on all but 2):

* 0: stopped cleanly (SIGTERM, SIGINT);
* 1: a runtime error (the store, the outbox or the state_dir cannot be used): a
  restart may succeed once the disk or directory is back;
* 2: the configuration is refused (one line names the key), also a state_dir that
  cannot be created or written (a file in its path, no write permission): a restart
  cannot fix it;
* 3: another cellguard holds the state_dir (one line names it and the PID);
* 130: interrupted before the service was up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt

from cellguard.daemon import simulate_arbin, simulate_maccor
from cellguard.daemon.analyze import run_analyze_cli
from cellguard.daemon.check import run_check_cli
from cellguard.daemon.config import Config, check_state_dir, load_config
from cellguard.daemon.control import ControlError, control_socket_path, send_command
from cellguard.daemon.demo import run_demo_cli
from cellguard.daemon.demo_arbin import run_arbin_demo_cli
from cellguard.daemon.demo_maccor import run_maccor_demo_cli
from cellguard.daemon.export import run_export_cli
from cellguard.daemon.instance_lock import StateDirInUse
from cellguard.daemon.plots import run_plot_cli
from cellguard.daemon.redact import install_redaction
from cellguard.daemon.replay import run_replay_cli
from cellguard.daemon.service import serve
from cellguard.daemon.simulate import serve_neware
from cellguard.daemon.simulate_modbus import serve_modbus
from cellguard.daemon.simulate_smu import CELL_PRESETS, serve_smu
from cellguard.daemon.status import print_status, watch_status
from cellguard.drivers.errors import CellguardError, ConfigError
from cellguard.protocols import InstrumentLimits, write_step_file
from cellguard.protocols.detectors import DetectorSettings
from cellguard.protocols.script import (
    DEFAULT_CE,
    InstrumentCapability,
    describe,
    dry_run,
    example_path,
    format_hours,
    load_protocol_file,
    preflight,
    to_step_file,
    unexpressed,
)
from cellguard.protocols.script import Protocol as ScriptProtocol

log = logging.getLogger("cellguard")

EXIT_RUNTIME_ERROR = 1
EXIT_BAD_CONFIG = 2
EXIT_STATE_DIR_IN_USE = 3


def _argument(
    text: str, convert: type, ok: Callable[[float], bool], what: str, allowed: str
) -> Any:
    """``text`` as a number of type ``convert`` that passes ``ok``; else a message that
    says what was expected and what came."""
    try:
        value = convert(text)
    except ValueError:
        msg = f"must be {what}, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not ok(value):
        msg = f"must be {allowed}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    return float(_argument(text, float, lambda v: v > 0, "a number", "> 0"))


def _positive_int(text: str) -> int:
    return int(_argument(text, int, lambda v: v >= 1, "a whole number", ">= 1"))


def _fraction(text: str) -> float:
    ok = lambda v: 0 < v <= 1  # noqa: E731
    return float(_argument(text, float, ok, "a fraction", "a fraction in (0, 1], e.g. 0.99"))


def _volts(text: str) -> float:
    ok = lambda v: math.isfinite(v) and v >= 0  # noqa: E731
    return float(_argument(text, float, ok, "a voltage in V", "a voltage >= 0 V"))


def _add_window(parser: argparse.ArgumentParser) -> None:
    """``--v-min``/``--v-max``: a full cell's voltage window (refused for Li|Li cells)."""
    defaults = DetectorSettings(cell="full")
    parser.add_argument(
        "--v-min",
        type=_volts,
        default=None,
        metavar="V",
        help=f"full cell: lowest allowed voltage, V (default {defaults.full_v_min_v:g}; "
        "0 for a fresh cell resting at 0.2-0.4 V before formation)",
    )
    parser.add_argument(
        "--v-max",
        type=_volts,
        default=None,
        metavar="V",
        help=f"full cell: highest allowed voltage, V (default {defaults.full_v_max_v:g})",
    )


HOURS_HELP = (
    "Hours (text and --json) are the file's own test time ('Test Time' column, Neware "
    "total time) in h, as the instrument counted it from the start of the test: the "
    "same in replay, analyze and plot."
)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"must be a TCP port number, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not 0 <= value <= 65535:
        msg = f"must be 0..65535, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellguard",
        description="Watch battery cyclers, stream every sample, halt a cell the moment it fails.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the paper's 8 cells on a simulated CT-4008 through the real driver",
        description=(
            "Starts a simulated Neware CT-4008 (8 channels: MII-1, MII-2, MII-3 and SEI "
            "interphases, each in a 100|100 µm symmetric and a 100|20 µm asymmetric Li cell), "
            "cycles them at 0.5 mA cm⁻² / 0.5 mAh cm⁻² in virtual time through the Neware "
            "driver over TCP, and prints what happened to every cell."
        ),
    )
    demo.add_argument("--hours", type=_positive_float, default=600.0, help="simulated hours")
    demo.add_argument("--seed", type=int, default=1, help="simulator seed (deterministic)")
    demo.add_argument(
        "--poll-s", type=_positive_float, default=300.0, help="simulated seconds between polls"
    )
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.add_argument(
        "--instrument",
        choices=("neware", "arbin", "maccor"),
        default="neware",
        help="the simulated cycler: a Neware CT-4008 (BTS API), an Arbin (CTI) or a Maccor "
        "(MacNet)",
    )
    demo.add_argument(
        "--export-dir",
        type=Path,
        default=None,
        help="also write each channel's recorded samples there as BDF CSV (for `plot --grid`)",
    )

    run = sub.add_parser(
        "run",
        help="run the service in the foreground (for systemd and Windows services)",
        description="Guard every channel of CONFIG until SIGTERM/SIGINT. Exit 2 on a bad config.",
    )
    run.add_argument("config", type=Path, help="the TOML configuration file")

    check_config = sub.add_parser(
        "check",
        help="validate a config as `run` would, starting nothing; --connect asks the instruments",
        description=(
            "Exit 0: it would run. Exit 2: refused, one line per problem naming the key "
            "(or, with --connect, a channel the instrument lacks or a protocol beyond its "
            "range). Exit 4 (--connect): an instrument could not be reached, one line each."
        ),
    )
    check_config.add_argument("config", type=Path, help="the TOML configuration file")
    check_config.add_argument(
        "--connect",
        action="store_true",
        help="also ask each instrument (read-only) whether its channels exist and can "
        "take the currents",
    )

    status = sub.add_parser("status", help="the channels' states, from the daemon's state store")
    status.add_argument("config", type=Path, help="the daemon's TOML configuration file")
    status.add_argument("--watch", action="store_true", help="refresh the table in place")
    status.add_argument(
        "--interval", type=_positive_float, default=2.0, help="seconds between refreshes"
    )
    status.add_argument("--count", type=_positive_int, default=None, help=argparse.SUPPRESS)

    protocol = sub.add_parser("protocol", help="check or compile a protocol script (TOML)")
    proto_sub = protocol.add_subparsers(dest="protocol_command", required=True, metavar="ACTION")
    check = proto_sub.add_parser(
        "check",
        help="validate a protocol and show its compiled steps and expected length",
        description="Exit 2 with one line naming the step and the word at fault on errors.",
    )
    check.add_argument(
        "file", type=Path, help="the protocol TOML file, or a shipped example's name"
    )
    check.add_argument(
        "--current-range-ma", type=_positive_float, default=10.0, help="instrument range, mA"
    )
    check.add_argument(
        "--ce",
        type=_fraction,
        default=DEFAULT_CE,
        help=f"Li Coulombic efficiency assumed for the pre-flight (default {DEFAULT_CE:g}): "
        "an asymmetric cell's thin electrode is forecast to run out at it",
    )
    check.add_argument(
        "--host-driven",
        action="store_true",
        help="check it for a host-driven instrument (source-meter, Modbus supply): gotos "
        "and mid-run temperature steps allowed; the length from a dry run on an ideal cell",
    )
    compile_ = proto_sub.add_parser("compile", help="compile a protocol for an instrument")
    compile_.add_argument("file", type=Path, help="the protocol TOML file")
    compile_.add_argument(
        "--format", choices=("neware-xml",), default="neware-xml", help="output format"
    )
    compile_.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    compile_.add_argument(
        "--current-range-ma", type=_positive_float, default=10.0, help="instrument range, mA"
    )

    start = proto_sub.add_parser(
        "start",
        help="start a protocol on a channel of the running daemon (local, or through MQTT)",
        description=(
            "Validates FILE here and sends it to the daemon: on this machine through its "
            "local control socket in state_dir (as the daemon's user, no broker needed), "
            "else on its MQTT command topic as the operator user; prints the daemon's "
            "answer. Exit 2 if it was refused, 1 if the daemon or the broker could not be "
            "reached (one line says which)."
        ),
    )
    start.add_argument(
        "--via",
        choices=("auto", "local", "mqtt"),
        default="auto",
        help="auto (default): the local control socket if the daemon serves one here, else MQTT",
    )
    start.add_argument("config", type=Path, help="the daemon's TOML configuration file")
    start.add_argument("instrument", help="instrument name from the config")
    start.add_argument("channel", help="channel id, e.g. 21-1-3")
    start.add_argument("file", type=Path, help="the protocol TOML file")
    start.add_argument("--username", default="operator", help="MQTT user allowed to command")
    start.add_argument(
        "--password-env",
        default="CELLGUARD_OPERATOR_PASSWORD",
        help="environment variable holding that user's password",
    )
    start.add_argument(
        "--timeout-s", type=_positive_float, default=60.0, help="wait for the answer"
    )

    simulate = sub.add_parser("simulate", help="serve a simulated instrument on a real socket")
    sim_sub = simulate.add_subparsers(dest="instrument", required=True, metavar="INSTRUMENT")
    neware = sim_sub.add_parser(
        "neware",
        help="a Neware CT-4008 behind a BTS 8 API server (XML over TCP)",
        description="Any BTS API client can connect; channels are devid-unit-chl, e.g. 1-1-3.",
    )
    neware.add_argument("--host", default="127.0.0.1", help="address to listen on")
    neware.add_argument("--port", type=_port, default=502, help="TCP port (BTS default 502)")
    neware.add_argument("--units", type=_positive_int, default=1, help="units of 8 channels")
    neware.add_argument("--devid", type=_positive_int, default=1, help="device id")
    neware.add_argument(
        "--speed", type=_positive_float, default=1.0, help="simulated seconds per wall second"
    )
    neware.add_argument("--seed", type=int, default=0, help="simulator seed")
    neware.add_argument(
        "--current-range-ma",
        type=_positive_float,
        default=10.0,
        help="largest current a channel can source or sink, mA",
    )
    neware.add_argument(
        "--download-units",
        choices=("A", "mA"),
        default="A",
        help="download current/capacity/energy in A/Ah/Wh (recorded server) or "
        "mA/mAh/mWh (a 2025 server)",
    )
    neware.add_argument(
        "--first-cycle-id",
        type=int,
        choices=(0, 1),
        default=1,
        help="the first cycleid in download (some servers count from 0)",
    )
    modbus = sim_sub.add_parser(
        "modbus",
        help="a cycler (id 1), a temperature chamber (2) and a pressure cell (3) over Modbus",
        description=(
            "pymodbus server hosting three devices: a cycler/bidirectional supply with a "
            "simulated Li cell (device id 1), a temperature chamber (2) and a stack-pressure "
            "cell (3); Modbus TCP on --port, RTU on --serial, or both. Prints the register maps."
        ),
    )
    modbus.add_argument("--host", default="127.0.0.1", help="address to listen on")
    modbus.add_argument("--port", type=_port, default=None, help="Modbus TCP port (0: any free)")
    modbus.add_argument("--serial", default=None, metavar="DEV", help="serve RTU on this line")
    modbus.add_argument("--baudrate", type=_positive_int, default=19200, help="serial baud rate")
    modbus.add_argument(
        "--speed", type=_positive_float, default=1.0, help="simulated seconds per wall second"
    )
    modbus.add_argument("--seed", type=int, default=0, help="simulator seed")
    modbus.add_argument(
        "--current-range-ma",
        type=_positive_float,
        default=10.0,
        help="largest current the cycler can source or sink, mA",
    )
    smu = sim_sub.add_parser(
        "smu",
        help="a Keithley 2400 source-measure unit with a simulated cell (SCPI on a serial line)",
        description=(
            "Answers the 2400's SCPI on a serial line: PORT is a device (e.g. one end of a "
            "socat pty pair; opened again if it goes away), pty:PATH for a pty of its own "
            "linked at PATH (hosts may close and reopen it), or socket://HOST:PORT to listen "
            "on TCP. Exit 2 if PORT cannot be opened."
        ),
    )
    smu.add_argument(
        "--serial", required=True, metavar="PORT", help="device path, pty:PATH or socket:// URL"
    )
    smu.add_argument("--baudrate", type=_positive_int, default=9600, help="serial baud rate")
    smu.add_argument(
        "--speed", type=_positive_float, default=1.0, help="simulated seconds per wall second"
    )
    smu.add_argument("--seed", type=int, default=0, help="simulator seed")
    smu.add_argument(
        "--cell", choices=CELL_PRESETS, default="SEI-symmetric", help="the cell on the terminals"
    )
    simulate_arbin.add_parser(
        sim_sub, port=_port, positive_int=_positive_int, positive_float=_positive_float
    )
    simulate_maccor.add_parser(
        sim_sub, port=_port, positive_int=_positive_int, positive_float=_positive_float
    )

    bench = sub.add_parser(
        "bench",
        help="measure halt latency, throughput, CPU and memory (a source checkout, "
        "pip install -e '.[bench]')",
        description=(
            "Runs bench/run_bench.py of the checkout cellguard is installed from: 2,048 "
            "simulated channels at 1 Hz with faults, the driver against aurora-neware, "
            "replay, the InfluxDB sink and the detectors; prints a table."
        ),
    )
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="under three minutes")
    size.add_argument("--smoke", action="store_true", help="toy sizes, seconds (for tests)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")

    replay = sub.add_parser(
        "replay",
        help="stream recorded cycling files through the detectors and report",
        description=(
            "Reads Battery Data Format tables (.csv, .parquet: 'Test Time / s', "
            "'Voltage / V', 'Current / A', optional 'Step Index', 'Cycle Count'; time also "
            "in min or h, voltage in mV, current in mA, µA or uA) and Neware .nda/.ndax "
            "files, feeds every sample in order to the detectors, and reports every warning "
            "and the halt the channel would have got. Exit code 2 if a file could not be "
            "read or judged (the others are still reported; with --json it gets a record "
            '{"file": ..., "error": ...}). ' + HOURS_HELP
        ),
    )
    replay.add_argument("files", nargs="+", type=Path, metavar="FILE", help="recorded files")
    replay.add_argument(
        "--cell",
        required=True,
        choices=("symmetric", "asymmetric", "full"),
        help="Li|Li symmetric, Li|Li asymmetric, or a full cell (voltage window)",
    )
    replay.add_argument(
        "--area-cm2",
        type=_positive_float,
        default=None,
        help="electrode area, cm² (informational: reported with the results)",
    )
    replay.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per file: 'hours' (test time of the last sample), "
        "'halt_hours', and 'hours' and 'time_s' for every event",
    )
    _add_window(replay)
    _add_analytics_commands(sub)
    return parser


def _add_analytics_commands(sub: Any) -> None:
    cells = ("symmetric", "asymmetric", "full")
    analyze = sub.add_parser(
        "analyze",
        help="per-cycle polarization, capacity, failure and Coulombic efficiency of files",
        description=(
            "Reads recorded files as `replay` does, finds where the detectors would halt, "
            "and reports per cycle: polarization (mean |V| over the middle third of each "
            "half cycle) and its max, cumulative plated capacity, hours; the failure; for "
            "a depleted asymmetric cell the average Li Coulombic efficiency "
            "1 - Q_thin/Q_stripped (a full cell: mean and max |V| per cycle). Exit 2 if a "
            'file could not be read or judged (with --json it gets {"file": ..., '
            '"error": ...}). ' + HOURS_HELP
        ),
    )
    analyze.add_argument("files", nargs="+", type=Path, metavar="FILE", help="recorded files")
    analyze.add_argument(
        "--cell", required=True, choices=cells, help="Li|Li cell type, or a full cell"
    )
    analyze.add_argument(
        "--thin-li-um", type=_positive_float, default=None, help="thin electrode, µm (for CE)"
    )
    analyze.add_argument(
        "--area-cm2", type=_positive_float, default=None, help="electrode area, cm² (0.785)"
    )
    analyze.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per file; 'hours' of each cycle (its end) and of the failure",
    )
    _add_window(analyze)

    export = sub.add_parser(
        "export",
        help="samples as Battery Data Format CSV/Parquet, from a file or the daemon's store",
        description=(
            "BDF columns: 'Test Time / s', 'Unix Time / s' (from the store), 'Voltage / V', "
            "'Current / A', 'Cycle Count / 1', 'Step Index / 1', 'Step Count / 1', "
            "'Net Capacity / Ah'. Give a FILE, or --store STATE_DIR --instrument --channel."
        ),
    )
    export.add_argument("file", nargs="?", type=Path, default=None, metavar="FILE")
    export.add_argument("--store", type=Path, default=None, metavar="STATE_DIR")
    export.add_argument("--instrument", default=None, help="instrument name (with --store)")
    export.add_argument("--channel", default=None, help="channel id, e.g. 1-1-3 (with --store)")
    export.add_argument("--test-id", default=None, help="the test, if the channel holds several")
    export.add_argument("--format", required=True, choices=("bdf-csv", "bdf-parquet"))
    export.add_argument("-o", "--output", type=Path, required=True, help="file to write")

    plot = sub.add_parser(
        "plot",
        help="voltage with the halt marked and polarization per cycle, or a Fig. 2 grid (PNG)",
        description=(
            "Without --grid: voltage (mV; V for --cell full) against hours with the halt "
            "marked and the data after it faded, over polarization per cycle (a full "
            "cell: discharge capacity per cycle). A file that cannot be read is named on "
            "stderr (exit 2) and the others are plotted. With --grid: interphases x "
            "(symmetric, asymmetric 50 µm, 20 µm), cells read from file names as `demo "
            "--export-dir` writes them. Needs matplotlib (pip install 'cellguard[plot]'). "
            + HOURS_HELP
        ),
    )
    plot.add_argument("files", nargs="+", type=Path, metavar="FILE", help="files (or folders)")
    plot.add_argument(
        "--cell", choices=cells, default=None, help="Li|Li cell type or full (not --grid)"
    )
    plot.add_argument("--grid", action="store_true", help="the comparison grid of Fig. 2")
    plot.add_argument("--thin-li-um", type=_positive_float, default=None)
    plot.add_argument("--area-cm2", type=_positive_float, default=None)
    plot.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    _add_window(plot)


def main(argv: Sequence[str] | None = None) -> int:
    if sys.platform == "win32":  # pragma: no cover - aiomqtt needs the selector loop there
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # URLs with user:password@ or ?token= are logged whole by the sinks' outage lines.
    install_redaction()
    try:
        if args.command == "demo" and args.instrument in ("arbin", "maccor"):
            run_cli = run_arbin_demo_cli if args.instrument == "arbin" else run_maccor_demo_cli
            summary = asyncio.run(
                run_cli(hours=args.hours, seed=args.seed, poll_s=args.poll_s, as_json=args.json)
            )
            if args.json:
                print(json.dumps(summary))
            return 0
        if args.command == "demo":
            summary = asyncio.run(
                run_demo_cli(
                    hours=args.hours,
                    seed=args.seed,
                    poll_s=args.poll_s,
                    as_json=args.json,
                    export_dir=args.export_dir,
                )
            )
            if args.json:
                print(json.dumps(summary))
            return 0
        if args.command == "run":
            return _run(args)
        if args.command == "check":
            return run_check_cli(args.config, connect=args.connect)
        if args.command == "status":
            config = load_config(args.config, secrets=False)  # local state only
            if args.watch or args.count is not None:
                asyncio.run(watch_status(config, interval_s=args.interval, count=args.count))
            else:
                asyncio.run(print_status(config))
            return 0
        if args.command == "protocol":
            return _protocol_command(args)
        if args.command == "simulate" and args.instrument == "smu":
            asyncio.run(
                serve_smu(
                    port=args.serial,
                    speed=args.speed,
                    seed=args.seed,
                    cell=args.cell,
                    baudrate=args.baudrate,
                )
            )
            return 0
        if args.command == "simulate" and args.instrument == "arbin":
            return simulate_arbin.run(args)
        if args.command == "simulate" and args.instrument == "maccor":
            return simulate_maccor.run(args)
        if args.command == "simulate" and args.instrument == "modbus":
            asyncio.run(
                serve_modbus(
                    host=args.host,
                    port=args.port,
                    serial=args.serial,
                    baudrate=args.baudrate,
                    speed=args.speed,
                    seed=args.seed,
                    current_range_ma=args.current_range_ma,
                )
            )
            return 0
        if args.command == "simulate":
            asyncio.run(
                serve_neware(
                    host=args.host,
                    port=args.port,
                    units=args.units,
                    devid=args.devid,
                    speed=args.speed,
                    seed=args.seed,
                    current_range_ma=args.current_range_ma,
                    download_units=args.download_units,
                    first_cycle_id=args.first_cycle_id,
                )
            )
            return 0
        if args.command == "bench":
            return _bench(args)
        if args.command == "replay":
            return run_replay_cli(
                args.files,
                cell=args.cell,
                area_cm2=args.area_cm2,
                as_json=args.json,
                v_min_v=args.v_min,
                v_max_v=args.v_max,
            )
        if args.command in ("analyze", "export", "plot"):
            return _analytics_command(args)
    except CellguardError as err:
        print(f"cellguard: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2  # pragma: no cover - argparse rejects unknown commands


def _run(args: argparse.Namespace) -> int:
    """``cellguard run``: only a refused configuration exits 2 (see the module doc)."""
    config = load_config(args.config)  # ConfigError: 2, in main()
    check_state_dir(config.daemon.state_dir)
    _set_log_level(config.daemon.log_level, verbose=args.verbose)
    try:
        asyncio.run(_serve_until_signal(config))
    except StateDirInUse as err:
        print(f"cellguard: error: {err}", file=sys.stderr)
        return EXIT_STATE_DIR_IN_USE
    except ConfigError:
        raise
    except (CellguardError, OSError) as err:  # OSError: state_dir not creatable, ...
        print(f"cellguard: error: {err}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    return 0


def _analytics_command(args: argparse.Namespace) -> int:
    if args.command == "analyze":
        return run_analyze_cli(
            args.files,
            cell=args.cell,
            thin_li_um=args.thin_li_um,
            area_cm2=args.area_cm2,
            as_json=args.json,
            v_min_v=args.v_min,
            v_max_v=args.v_max,
        )
    if args.command == "export":
        return asyncio.run(
            run_export_cli(
                file=args.file,
                store_dir=args.store,
                instrument=args.instrument,
                channel=args.channel,
                test_id=args.test_id,
                fmt=args.format,
                output=args.output,
            )
        )
    return run_plot_cli(
        args.files,
        args.output,
        grid=args.grid,
        cell=args.cell,
        area_cm2=args.area_cm2,
        thin_li_um=args.thin_li_um,
        v_min_v=args.v_min,
        v_max_v=args.v_max,
    )


def _protocol_command(args: argparse.Namespace) -> int:
    if args.protocol_command == "start":
        return asyncio.run(_start_remote(args))
    file = args.file
    if not file.exists():  # a shipped example by its name, as a config may give it
        file = example_path(str(file)) or file
    script = load_protocol_file(file)
    limits = InstrumentLimits(current_range_ma=args.current_range_ma)
    if args.protocol_command == "check":
        if args.host_driven:
            host = InstrumentCapability(
                current_range_ma=args.current_range_ma, max_steps=1_000_000, name="instrument"
            )
            print(_describe_host(script, host))
        else:
            print(describe(script, limits))
        for line in preflight(script, args.ce).lines():
            print(line)
        return 0
    write_step_file(args.output, to_step_file(script, limits))
    # What the file cannot hold and cellguard enforces: said loudly, never dropped.
    for warning in unexpressed(script):
        print(f"cellguard: WARNING: {warning}", file=sys.stderr)
    print(f"wrote {args.output} ({args.format})")
    return 0


def _describe_host(script: ScriptProtocol, limits: InstrumentCapability) -> str:
    """The steps as written with absolute currents, and a dry run's expected length."""
    run = dry_run(script, limits)  # validates first: an impossible protocol raises
    lines = [script.name, f"record every {script.record_every}; host-driven"]
    lines.extend(f"limit: {limit}" for limit in script.limits)
    for number, step in enumerate(script.steps, start=1):
        line = f"{number:>3}  {step.text}"
        current = getattr(step, "current", None)
        if current is not None:
            line += f"  [{script.cell.current_ma(current):.4g} mA]"
        lines.append(line)
    ended = run.finished.detail if run.finished is not None else "cut short (too long to run)"
    lines.append(
        f"dry run on an ideal cell: {format_hours(run.length_s)}, {run.cycles} cycle(s), "
        f"{run.samples} samples; {ended}"
    )
    return "\n".join(lines)


async def _start_remote(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    load_protocol_file(args.file)  # refuse a bad script here, before anything is sent
    state_dir = config.daemon.state_dir
    via = args.via
    if via == "auto":
        local = control_socket_path(state_dir).exists() or config.mqtt is None
        via = "local" if local else "mqtt"
    request_id = uuid.uuid4().hex
    body = {"action": "start", "request_id": request_id, "protocol": args.file.read_text()}
    try:
        if via == "local":
            answer = await send_command(
                state_dir, args.instrument, args.channel, body, timeout_s=args.timeout_s
            )
        else:
            answer = await _start_over_mqtt(args, config, body)
    except ControlError as err:
        print(f"cellguard: error: {err}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    print(f"{args.instrument} {args.channel}: {answer.get('detail')}")
    return 0 if answer.get("ok") else 2


async def _start_over_mqtt(
    args: argparse.Namespace, config: Config, body: dict[str, Any]
) -> dict[str, Any]:
    if config.mqtt is None:
        msg = "this daemon has no [mqtt]: use --via local on the daemon's machine"
        raise ConfigError(field="mqtt", problem=msg)
    password = os.environ.get(args.password_env)
    if password is None:
        raise ConfigError(field="--password-env", problem=f"${args.password_env} is not set")
    mq = config.mqtt
    result_topic = f"{mq.topic_prefix}/command_result/{args.instrument}/{args.channel}"
    try:
        async with aiomqtt.Client(
            mq.host, mq.port, username=args.username, password=password, timeout=args.timeout_s
        ) as client:
            await client.subscribe(result_topic, qos=1)
            await client.publish(
                f"{mq.topic_prefix}/command/{args.instrument}/{args.channel}",
                json.dumps(body),
                qos=1,
            )
            async with asyncio.timeout(args.timeout_s):
                async for message in client.messages:
                    answer = json.loads(bytes(message.payload))
                    if answer.get("request_id") == body["request_id"]:
                        return dict(answer)
    except TimeoutError:
        msg = f"no answer from the daemon through MQTT within {args.timeout_s:g} s: is it running?"
        raise ControlError(msg) from None
    except (aiomqtt.MqttError, OSError) as err:
        msg = (
            f"the MQTT broker at {mq.host}:{mq.port} could not be reached ({err}); on the "
            "daemon's machine --via local needs no broker"
        )
        raise ControlError(msg) from None
    msg = "the MQTT connection ended before the daemon answered"
    raise ControlError(msg)


def _bench(args: argparse.Namespace) -> int:
    # bench/ is not installed: it is found next to the sources of an editable install.
    script = Path(__file__).resolve().parents[1] / "bench" / "run_bench.py"
    if not script.is_file():
        print(
            "cellguard: error: `cellguard bench` needs a source checkout "
            f"(pip install -e .); no bench/run_bench.py next to {Path(__file__).parent}",
            file=sys.stderr,
        )
        return 2
    try:
        # The one bench dependency beyond cellguard's own: the client it is compared with.
        importlib.import_module("aurora_neware")
    except ImportError:
        print(
            "cellguard: error: `cellguard bench` compares against aurora-neware: "
            "pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    flags = [f"--{name}" for name in ("quick", "smoke", "json", "record") if getattr(args, name)]
    return subprocess.run([sys.executable, str(script), *flags], check=False).returncode


def _set_log_level(level: str, *, verbose: bool) -> None:
    logging.getLogger().setLevel(logging.DEBUG if verbose else level.upper())


async def _serve_until_signal(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C raises instead
            loop.add_signal_handler(sig, stop.set)
    await serve(config, stop=stop)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
