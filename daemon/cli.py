"""The ``cellguard`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import aiomqtt
from rich.console import Console
from rich.table import Table

from cellguard.daemon.config import Config, load_config
from cellguard.daemon.demo import run_demo_cli
from cellguard.daemon.replay import run_replay_cli
from cellguard.daemon.service import serve, status_rows
from cellguard.daemon.simulate import serve_neware
from cellguard.daemon.store import Store
from cellguard.drivers.errors import CellguardError, ConfigError
from cellguard.protocols import InstrumentLimits, write_step_file
from cellguard.protocols.script import describe, load_protocol_file, to_step_file

log = logging.getLogger("cellguard")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"must be a number, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not value > 0:
        msg = f"must be > 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"must be a whole number, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 1:
        msg = f"must be >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


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

    run = sub.add_parser(
        "run",
        help="run the service in the foreground (for systemd and Windows services)",
        description="Guard every channel of CONFIG until SIGTERM/SIGINT. Exit 2 on a bad config.",
    )
    run.add_argument("config", type=Path, help="the TOML configuration file")

    status = sub.add_parser("status", help="the channels' states, from the daemon's state store")
    status.add_argument("config", type=Path, help="the daemon's TOML configuration file")

    protocol = sub.add_parser("protocol", help="check or compile a protocol script (TOML)")
    proto_sub = protocol.add_subparsers(dest="protocol_command", required=True, metavar="ACTION")
    check = proto_sub.add_parser(
        "check",
        help="validate a protocol and show its compiled steps and expected length",
        description="Exit 2 with one line naming the step and the word at fault on errors.",
    )
    check.add_argument("file", type=Path, help="the protocol TOML file")
    check.add_argument(
        "--current-range-ma", type=_positive_float, default=10.0, help="instrument range, mA"
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
        help="start a protocol on a channel of the running daemon (through MQTT)",
        description=(
            "Validates FILE here, sends it on the daemon's MQTT command topic as the operator "
            "user, and prints the daemon's answer. Exit 2 if it was refused."
        ),
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

    replay = sub.add_parser(
        "replay",
        help="stream recorded cycling files through the detectors and report",
        description=(
            "Reads Battery Data Format tables (.csv, .parquet: 'Test Time / s', "
            "'Voltage / V', 'Current / A', optional 'Step Index', 'Cycle Count') and Neware "
            ".nda/.ndax files, feeds every sample in order to the detectors, and reports "
            "every warning and the halt the channel would have got. Exit code 2 if a file "
            "could not be read (the others are still reported)."
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
    replay.add_argument("--json", action="store_true", help="print one JSON object per file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if sys.platform == "win32":  # pragma: no cover - aiomqtt needs the selector loop there
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "demo":
            summary = asyncio.run(
                run_demo_cli(
                    hours=args.hours, seed=args.seed, poll_s=args.poll_s, as_json=args.json
                )
            )
            if args.json:
                print(json.dumps(summary))
            return 0
        if args.command == "run":
            config = load_config(args.config)
            _set_log_level(config.daemon.log_level, verbose=args.verbose)
            asyncio.run(_serve_until_signal(config))
            return 0
        if args.command == "status":
            asyncio.run(_print_status(load_config(args.config)))
            return 0
        if args.command == "protocol":
            return _protocol_command(args)
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
                )
            )
            return 0
        if args.command == "replay":
            return run_replay_cli(
                args.files, cell=args.cell, area_cm2=args.area_cm2, as_json=args.json
            )
    except CellguardError as err:
        print(f"cellguard: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2  # pragma: no cover - argparse rejects unknown commands


def _protocol_command(args: argparse.Namespace) -> int:
    if args.protocol_command == "start":
        return asyncio.run(_start_remote(args))
    script = load_protocol_file(args.file)
    limits = InstrumentLimits(current_range_ma=args.current_range_ma)
    if args.protocol_command == "check":
        print(describe(script, limits))
        return 0
    write_step_file(args.output, to_step_file(script, limits))
    print(f"wrote {args.output} ({args.format})")
    return 0


async def _start_remote(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    load_protocol_file(args.file)  # refuse a bad script here, before anything is sent
    if config.mqtt is None:
        msg = "this daemon has no [mqtt]: start the protocol through its config (mode = run)"
        raise ConfigError(field="mqtt", problem=msg)
    password = os.environ.get(args.password_env)
    if password is None:
        raise ConfigError(field="--password-env", problem=f"${args.password_env} is not set")
    mq = config.mqtt
    request_id = uuid.uuid4().hex
    body = {"action": "start", "request_id": request_id, "protocol": args.file.read_text()}
    result_topic = f"{mq.topic_prefix}/command_result/{args.instrument}/{args.channel}"
    async with aiomqtt.Client(
        mq.host, mq.port, username=args.username, password=password, timeout=args.timeout_s
    ) as client:
        await client.subscribe(result_topic, qos=1)
        await client.publish(
            f"{mq.topic_prefix}/command/{args.instrument}/{args.channel}", json.dumps(body), qos=1
        )
        async with asyncio.timeout(args.timeout_s):
            async for message in client.messages:
                answer = json.loads(bytes(message.payload))
                if answer.get("request_id") == request_id:
                    break
    print(f"{args.instrument} {args.channel}: {answer.get('detail')}")
    return 0 if answer.get("ok") else 2


def _set_log_level(level: str, *, verbose: bool) -> None:
    logging.getLogger().setLevel(logging.DEBUG if verbose else level.upper())


async def _serve_until_signal(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C raises instead
            loop.add_signal_handler(sig, stop.set)
    await serve(config, stop=stop)


async def _print_status(config: Config) -> None:
    async with Store(config.daemon.state_dir) as store:
        states = list((await store.load_channel_states()).values())
    table = Table(title=f"cellguard status ({config.daemon.state_dir})")
    for name in ("instrument", "channel", "state", "test", "last seq", "detail"):
        table.add_column(name)
    for row in status_rows(states):
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
