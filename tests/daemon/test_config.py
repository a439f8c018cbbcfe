"""The configuration file: the example parses; every refusal is one line naming the key."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import re
import socket
from pathlib import Path

import pytest

from cellguard.daemon.analytics_tap import CycleRow
from cellguard.daemon.cli import main
from cellguard.daemon.config import (
    DRIVERS,
    ChannelSettings,
    Config,
    NewareSettings,
    Secret,
    check_state_dir,
    default_config,
    load_config,
    parse_config,
)
from cellguard.daemon.influx import cycle_line, event_line, sample_line
from cellguard.daemon.records import ChannelTags, EventRecord, SampleRecord
from cellguard.drivers.errors import CellguardError, ConfigError
from cellguard.drivers.neware import DEFAULT_TIMEOUT_S, ChannelId
from cellguard.protocols.detectors import DetectorSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

ENV = {
    "CELLGUARD_INFLUX_TOKEN": "influx-token-123",
    "CELLGUARD_MQTT_USER": "daemon-lab1",
    "CELLGUARD_MQTT_PASSWORD": "mqtt-pass-456",
}

FULL = """\
[daemon]
state_dir = "/var/lib/cellguard"
log_level = "info"

[influxdb]
url = "http://127.0.0.1:8086"
org = "lab"
bucket = "cycling"
token_env = "CELLGUARD_INFLUX_TOKEN"
batch_size = 5000
flush_interval_s = 1.0
timeout_s = 30.0

[mqtt]
host = "127.0.0.1"
port = 1883
topic_prefix = "cellguard/lab1"
username_env = "CELLGUARD_MQTT_USER"
password_env = "CELLGUARD_MQTT_PASSWORD"
tls = false
client_id = "cellguard-lab1"

[[instruments]]
name = "ct4008-a"
driver = "neware"
host = "127.0.0.1"
port = 502
poll_interval_s = 1.0
timeout_s = 10.0
step_file_dir = "C:/cellguard/steps"

[[channels]]
instrument = "ct4008-a"
channel = "21-1-3"
mode = "monitor"
detector = { shift_ratio = 2.5 }
[channels.cell]  # the same as an inline table, written as a sub-table
type = "asymmetric"
area_cm2 = 0.785
thick_li_um = 100
thin_li_um = 20
interphase = "LPSC:LGPS 4:1"

[[channels]]
instrument = "ct4008-a"
channel = "21-1-4"
mode = "run"
cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100 }
protocol.kind = "galvanostatic"  # dotted keys work too
protocol.current_density_ma_cm2 = 0.5
protocol.areal_capacity_mah_cm2 = 0.5
protocol.cycles = 1000
protocol.record_interval_s = 60

[[channels]]
instrument = "ct4008-a"
channel = "21-1-5"
mode = "monitor"
cell = { type = "full", area_cm2 = 1.13 }
"""

MINIMAL = """\
[daemon]
state_dir = "/var/lib/cellguard"

[[instruments]]
name = "ct4008-a"
driver = "neware"
host = "127.0.0.1"
port = 502
poll_interval_s = 1.0
"""

CHANNEL = """
[[channels]]
instrument = "ct4008-a"
channel = "21-1-3"
mode = "monitor"
cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100 }
"""


def refusal(text: str, env: dict[str, str] | None = None, **kwargs: object) -> str:
    """The one-line message ``parse_config`` refuses ``text`` with."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=ENV if env is None else env, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message, message
    assert message == f"{info.value.field}: {info.value.problem}"
    return message


def with_channel(**fields: str) -> str:
    """MINIMAL plus one channel whose TOML lines ``fields`` replace or add."""
    lines = dict(line.split(" = ", 1) for line in CHANNEL.strip().splitlines()[1:])
    lines.update(fields)
    body = "\n".join(f"{key} = {value}" for key, value in lines.items() if value)
    return f"{MINIMAL}\n[[channels]]\n{body}\n"


# ------------------------------------------------------------------ what parses


def test_full_example_parses_into_typed_settings() -> None:
    """The issue's shape, all sections, gives typed values with units and defaults."""
    config = parse_config(FULL, env=ENV)
    assert config.daemon.state_dir == Path("/var/lib/cellguard")
    assert config.daemon.log_level == "info"
    assert config.influxdb is not None
    assert config.influxdb.url == "http://127.0.0.1:8086"
    assert (config.influxdb.org, config.influxdb.bucket) == ("lab", "cycling")
    assert config.influxdb.token is not None
    assert config.influxdb.token.reveal() == "influx-token-123"
    assert (config.influxdb.batch_size, config.influxdb.flush_interval_s) == (5000, 1.0)
    assert config.influxdb.timeout_s == 30.0
    assert config.mqtt is not None
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("127.0.0.1", 1883, False)
    assert config.mqtt.topic_prefix == "cellguard/lab1"
    assert config.mqtt.client_id == "cellguard-lab1"
    assert config.mqtt.username is not None
    assert config.mqtt.password is not None
    assert config.mqtt.username.reveal() == "daemon-lab1"
    assert config.mqtt.password.reveal() == "mqtt-pass-456"
    assert config.instruments == (
        NewareSettings(
            name="ct4008-a",
            driver="neware",
            host="127.0.0.1",
            port=502,
            poll_interval_s=1.0,
            timeout_s=10.0,
            step_file_dir="C:/cellguard/steps",
        ),
    )
    monitor, run, full = config.channels
    assert monitor.channel == ChannelId(21, 1, 3)
    assert monitor.mode == "monitor"
    assert monitor.protocol is None
    assert monitor.cell.type == "asymmetric"
    assert (monitor.cell.thick_li_um, monitor.cell.thin_li_um) == (100.0, 20.0)
    assert monitor.cell.interphase == "LPSC:LGPS 4:1"
    assert monitor.detector == DetectorSettings(cell="asymmetric", shift_ratio=2.5)
    assert monitor.detector.overrides == {"shift_ratio": 2.5}
    assert run.protocol is not None
    assert run.protocol.cell.cell_type == "symmetric"
    assert run.protocol.current_ma == pytest.approx(0.3925)
    assert run.protocol.cycles == 1000
    assert run.protocol.record_interval_s == 60.0
    assert (run.cell.thick_li_um, run.cell.thin_li_um) == (100.0, 100.0)
    assert run.detector == DetectorSettings(cell="symmetric")
    assert full.cell.type == "full"
    assert full.cell.to_cell() is None
    assert full.detector.cell == "full"
    assert config.channels_of("ct4008-a") == config.channels
    assert config.instrument("ct4008-a") is config.instruments[0]


def test_optional_sections_and_keys_take_their_defaults() -> None:
    """No [influxdb], no [mqtt], no channels: embedded store, alerts to the log."""
    config = parse_config(MINIMAL, env={})
    assert config.influxdb is None
    assert config.mqtt is None
    assert config.channels == ()
    assert config.daemon.log_level == "info"
    assert config.instruments[0].timeout_s == DEFAULT_TIMEOUT_S
    assert config.instruments[0].step_file_dir is None


def test_influxdb_without_any_token_means_no_auth() -> None:
    """VictoriaMetrics and InfluxDB 1.8 without auth need no token."""
    text = MINIMAL + '[influxdb]\nurl = "http://vm:8428/"\norg = "lab"\nbucket = "cycling"\n'
    config = parse_config(text, env={})
    assert config.influxdb is not None
    assert config.influxdb.token is None
    assert config.influxdb.url == "http://vm:8428"


def test_mqtt_defaults_derive_client_id_and_port() -> None:
    """client_id follows the topic prefix, the host and the state_dir (two daemons
    sharing a prefix never share an id); tls = true moves the default port to 8883."""
    text = MINIMAL + '[mqtt]\nhost = "broker.lab"\ntopic_prefix = "lab2/bts-pc3"\ntls = true\n'
    config = parse_config(text, env={})
    assert config.mqtt is not None
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname()).strip("-")
    assert re.fullmatch(
        rf"cellguard-lab2-bts-pc3-{re.escape(host)}-[0-9a-f]{{8}}", config.mqtt.client_id
    )
    assert parse_config(text, env={}).mqtt.client_id == config.mqtt.client_id  # type: ignore[union-attr]
    other = parse_config(text.replace("/var/lib/cellguard", "/var/lib/cellguard-2"), env={})
    assert other.mqtt is not None
    assert other.mqtt.client_id != config.mqtt.client_id
    assert config.mqtt.port == 8883
    assert config.mqtt.username is None


def test_log_level_choices() -> None:
    text = MINIMAL.replace(
        'state_dir = "/var/lib/cellguard"', 'state_dir = "/s"\nlog_level = "debug"'
    )
    assert parse_config(text, env={}).daemon.log_level == "debug"
    bad = MINIMAL.replace(
        'state_dir = "/var/lib/cellguard"', 'state_dir = "/s"\nlog_level = "verbose"'
    )
    assert refusal(bad) == (
        'daemon.log_level: must be one of debug, info, warning, error, got "verbose"'
    )


def test_channel_tags_carry_the_cell() -> None:
    config = parse_config(FULL, env=ENV)
    assert config.channels[0].tags("T42") == ChannelTags(
        instrument="ct4008-a",
        channel="21-1-3",
        test_id="T42",
        interphase="LPSC:LGPS 4:1",
        cell_type="asymmetric",
    )


def test_relative_paths_start_at_the_config_files_folder(tmp_path: Path) -> None:
    """A service must not depend on its working directory."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "influx").write_text("  file-token\n\n")
    text = MINIMAL.replace('"/var/lib/cellguard"', '"state"') + (
        '[influxdb]\nurl = "http://127.0.0.1:8086"\norg = "lab"\nbucket = "b"\n'
        'token_file = "secrets/influx"\n'
    )
    path = tmp_path / "cellguard.toml"
    path.write_text(text)
    config = load_config(path, env={})
    assert config.daemon.state_dir == tmp_path / "state"
    assert config.influxdb is not None
    assert config.influxdb.token is not None
    assert config.influxdb.token.reveal() == "file-token"
    assert config.source == str(path)


def test_windows_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """Notepad on older Windows writes a BOM: the BTS PCs run Windows."""
    path = tmp_path / "cellguard.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_config(path, env={}).instruments[0].name == "ct4008-a"


def test_example_in_deploy_parses_with_the_env_vars_set() -> None:
    """deploy/cellguard.example.toml is kept in sync with the code."""
    config = load_config(DEPLOY / "cellguard.example.toml", env=ENV)
    assert config.influxdb is not None
    assert config.mqtt is not None
    assert [str(c.channel) for c in config.channels] == ["21-1-3", "21-1-4", "1"]
    assert [c.mode for c in config.channels] == ["monitor", "run", "run"]
    assert config.instruments[0].step_file_dir == "C:/cellguard/steps"
    smu = config.channels[2]
    assert (smu.instrument, smu.aux) == ("smu-1", ("chamber-1",))
    assert smu.script is not None
    assert smu.aux_limits == (("chamber_temperature_c", 20.0, 70.0),)
    assert [i.driver for i in config.instruments] == ["neware", "smu", "modbus-aux"]


def test_example_in_deploy_names_every_key_the_code_knows() -> None:
    """Every key a section allows appears in the example (documentation is complete)."""
    text = (DEPLOY / "cellguard.example.toml").read_text()
    keys = set(re.findall(r"^\s*([a-z0-9_]+)\s*=", text, flags=re.MULTILINE))
    keys |= set(re.findall(r"[{,]\s*([a-z0-9_]+)\s*=", text))
    for key in ("state_dir", "log_level", "url", "org", "bucket", "token_env", "batch_size",
                "flush_interval_s", "host", "port", "topic_prefix", "username_env",
                "password_env", "tls", "client_id", "name", "driver", "poll_interval_s",
                "timeout_s", "step_file_dir", "instrument", "channel", "mode", "cell",
                "protocol", "detector", "type", "area_cm2", "thick_li_um", "thin_li_um",
                "interphase", "kind", "current_density_ma_cm2", "areal_capacity_mah_cm2",
                "cycles", "record_interval_s", "serial_port", "baudrate", "device_id",
                "register_map", "protocol_file", "aux", "aux_limits"):  # fmt: skip
        assert key in keys, key
    # Keys that need a real file or a device to parse are documented in comments.
    for key in ("ca_file", "registers", "username_env", "password_env"):
        assert f"# {key} = " in text or f"own: {key} = " in text, key


def test_default_config_is_embedded_only(tmp_path: Path) -> None:
    """The demo's defaults: no InfluxDB, no MQTT, the same cross-checks."""
    config = default_config(tmp_path)
    assert config.daemon.state_dir == tmp_path
    assert (config.influxdb, config.mqtt, config.channels) == (None, None, ())
    parsed = parse_config(with_channel(), env={})
    config = default_config(tmp_path, instruments=parsed.instruments, channels=parsed.channels)
    assert config.channels == parsed.channels
    with pytest.raises(ConfigError, match=r"^channels\[0\]\.instrument: 'ct4008-a' is not one"):
        default_config(tmp_path, channels=parsed.channels)
    with pytest.raises(ConfigError, match=r"^channels\[1\]\.channel: 21-1-3 on ct4008-a"):
        default_config(
            tmp_path,
            instruments=parsed.instruments,
            channels=parsed.channels * 2,
        )


def test_registry_names_every_driver_and_its_channels() -> None:
    assert set(DRIVERS) == {"neware", "smu", "modbus", "modbus-aux", "arbin", "maccor"}
    assert DRIVERS["neware"].parse_channel("21-1-3") == ChannelId(21, 1, 3)
    assert DRIVERS["smu"].parse_channel("1") == "1"
    with pytest.raises(ConfigError, match="one channel"):
        DRIVERS["modbus"].parse_channel("2")
    with pytest.raises(ConfigError, match="no channel of its own"):
        DRIVERS["modbus-aux"].parse_channel("1")


# ------------------------------------------------------------------ secrets


def test_secrets_never_show_in_repr_str_or_describe() -> None:
    """Neither the objects nor the start-up summary show a secret."""
    config = parse_config(FULL, env=ENV)
    for text in (repr(config), str(config), config.describe(), repr(config.mqtt), f"{config}"):
        for secret in ENV.values():
            assert secret not in text
    assert repr(config.influxdb.token) == "Secret('***')"  # type: ignore[union-attr]
    assert str(config.influxdb.token) == "Secret('***')"  # type: ignore[union-attr]
    assert "env CELLGUARD_INFLUX_TOKEN" in config.describe()


def test_secret_equality_and_no_pickling() -> None:
    assert Secret("a") == Secret("a", "env X")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret("a"))
    config = parse_config(FULL, env=ENV)
    assert copy.deepcopy(config) == config  # copying is fine, only pickling is refused


def test_inline_secret_and_secret_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "mqtt-password"
    secret_file.write_text("\n  from-file  \n")
    text = MINIMAL + (
        f'[mqtt]\nhost = "h"\ntopic_prefix = "p"\nusername = "inline-user"\n'
        f'password_file = "{secret_file}"\n'
    )
    mqtt = parse_config(text, env={}).mqtt
    assert mqtt is not None
    assert mqtt.username is not None
    assert mqtt.password is not None
    assert (mqtt.username.reveal(), mqtt.username.origin) == ("inline-user", "inline")
    assert mqtt.password.reveal() == "from-file"
    assert mqtt.password.origin == f"file {secret_file}"


def test_missing_env_var_names_the_key_and_the_variable() -> None:
    message = refusal(FULL, env={k: v for k, v in ENV.items() if "INFLUX" not in k})
    assert message.startswith(
        "influxdb.token_env: environment variable CELLGUARD_INFLUX_TOKEN is not set"
    )


def test_empty_env_var_is_refused() -> None:
    message = refusal(FULL, env={**ENV, "CELLGUARD_MQTT_PASSWORD": "  "})
    assert message.startswith("mqtt.password_env: environment variable CELLGUARD_MQTT_PASSWORD")
    assert "empty" in message


def test_unreadable_or_empty_secret_file_is_refused(tmp_path: Path) -> None:
    base = MINIMAL + '[influxdb]\nurl = "http://h:8086"\norg = "o"\nbucket = "b"\n'
    missing = tmp_path / "nope"
    message = refusal(base + f'token_file = "{missing}"\n')
    assert message.startswith(f"influxdb.token_file: cannot read {missing}")
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    assert refusal(base + f'token_file = "{empty}"\n') == (
        f"influxdb.token_file: {empty} is empty; it must hold the InfluxDB API token"
    )


def test_two_ways_of_giving_one_secret_are_refused() -> None:
    text = FULL.replace(
        'token_env = "CELLGUARD_INFLUX_TOKEN"', 'token_env = "CELLGUARD_INFLUX_TOKEN"\ntoken = "x"'
    )
    assert refusal(text) == (
        "influxdb.token_env: token is given too; give only one of token, token_env, token_file"
    )


def test_secret_of_the_wrong_type_is_not_shown() -> None:
    text = FULL.replace('token_env = "CELLGUARD_INFLUX_TOKEN"', "token = 12345678")
    message = refusal(text)
    assert message.startswith("influxdb.token: must be the InfluxDB API token")
    assert "12345678" not in message


def test_password_without_user_is_refused() -> None:
    text = MINIMAL + '[mqtt]\nhost = "h"\ntopic_prefix = "p"\npassword = "x"\n'
    assert refusal(text).startswith("mqtt.password: a password needs a user name")


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            FULL.replace("token_env =", "tokn_env ="),
            "influxdb.tokn_env: unknown key; did you mean 'token_env'?",
            id="influxdb-typo",
        ),
        pytest.param(
            FULL.replace('token_env = "CELLGUARD_INFLUX_TOKEN"', 'tokn = "x"'),
            "influxdb.tokn: unknown key; did you mean 'token'?",
            id="influxdb-token-typo",
        ),
        pytest.param(
            FULL.replace("[daemon]", "[daemon]\nstatedir = 1"),
            "daemon.statedir: unknown key; did you mean 'state_dir'?",
            id="daemon",
        ),
        pytest.param(
            FULL.replace("tls = false", "tsl = false"),
            "mqtt.tsl: unknown key; did you mean 'tls'?",
            id="mqtt",
        ),
        pytest.param(
            FULL.replace("poll_interval_s = 1.0", "poll_interval = 1.0"),
            "instruments[0].poll_interval: unknown key; did you mean 'poll_interval_s'?",
            id="instrument",
        ),
        pytest.param(
            FULL.replace('mode = "run"', 'mode = "run"\nmod = 1'),
            "channels[1].mod: unknown key; did you mean 'mode'?",
            id="channel",
        ),
        pytest.param(
            FULL.replace("area_cm2 = 1.13", "area_cm2 = 1.13, aera = 1"),
            "channels[2].cell.aera: unknown key; did you mean 'area_cm2'?",
            id="cell",
        ),
        pytest.param(
            FULL.replace("cycles = 1000", "cycle = 1000"),
            "channels[1].protocol.cycle: unknown key; did you mean 'cycles'?",
            id="protocol",
        ),
        pytest.param(
            FULL.replace("shift_ratio = 2.5", "shift_ration = 2.5"),
            "channels[0].detector.shift_ration: unknown key; did you mean 'shift_ratio'?",
            id="detector",
        ),
        pytest.param(
            FULL + "\n[influx]\nurl = 1\n",
            "influx: unknown key; did you mean 'influxdb'?",
            id="top-level",
        ),
        pytest.param(
            FULL + "\n[zzz]\n",
            "zzz: unknown key; allowed keys are daemon, influxdb, mqtt, instruments, channels",
            id="top-level-no-match",
        ),
    ],
)
def test_unknown_keys_at_every_level(text: str, expected: str) -> None:
    """A misspelt key is named with its path and the closest allowed key."""
    assert refusal(text) == expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "port = 502",
            'port = "502x"',
            'instruments[0].port: must be an integer 1..65535, got "502x"',
        ),
        (
            "port = 502",
            "port = 70000",
            "instruments[0].port: must be an integer 1..65535, got 70000",
        ),
        (
            "port = 502",
            "port = 502.0",
            "instruments[0].port: must be an integer 1..65535, got 502.0",
        ),
        ("port = 1883", "port = true", "mqtt.port: must be an integer 1..65535, got true"),
        (
            "poll_interval_s = 1.0",
            "poll_interval_s = 0",
            "instruments[0].poll_interval_s: must be a time in s from 0.01 to 600 (e.g. 1.0), "
            "got 0",
        ),
        (
            "timeout_s = 10.0",
            'timeout_s = "10"',
            'instruments[0].timeout_s: must be a time in s from 0.01 to 600 (e.g. 10.0), got "10"',
        ),
        ("tls = false", 'tls = "no"', 'mqtt.tls: must be true or false, got "no"'),
        (
            "batch_size = 5000",
            "batch_size = 0",
            "influxdb.batch_size: must be an integer 1..1000000 (points per write), got 0",
        ),
        (
            "timeout_s = 30.0",
            "timeout_s = 0",
            "influxdb.timeout_s: must be a time in s > 0 (e.g. 10.0), got 0",
        ),
        (
            "flush_interval_s = 1.0",
            "flush_interval_s = nan",
            "influxdb.flush_interval_s: must be a time in s > 0 (e.g. 1.0), got nan",
        ),
        (
            'url = "http://127.0.0.1:8086"',
            'url = "127.0.0.1:8086"',
            'influxdb.url: must be an http:// or https:// URL, e.g. "http://127.0.0.1:8086", '
            'got "127.0.0.1:8086"',
        ),
        (
            'org = "lab"',
            'org = ""',
            'influxdb.org: must be the organisation, e.g. "lab" (any name '
            'for InfluxDB 1.8), got ""',
        ),
        (
            'host = "127.0.0.1"\nport = 502',
            'host = "tcp://10.0.0.2"\nport = 502',
            "instruments[0].host: must be the instrument server's host name or IP address "
            '(no scheme, path or spaces), got "tcp://10.0.0.2"',
        ),
        (
            'topic_prefix = "cellguard/lab1"',
            'topic_prefix = "cellguard/#"',
            "mqtt.topic_prefix: must be topic levels without wildcards (+, #) or a leading or "
            'trailing "/", e.g. "cellguard/lab1", got "cellguard/#"',
        ),
        (
            'name = "ct4008-a"',
            'name = "ct 4008/a"',
            "instruments[0].name: must be letters, digits, '-', '_' or '.' (it becomes a tag "
            'and a topic level), got "ct 4008/a"',
        ),
        (
            'driver = "neware"',
            'driver = "newere"',
            "instruments[0].driver: must be one of neware, smu, modbus, modbus-aux, arbin, "
            "maccor, got \"newere\"; did you mean 'neware'?",
        ),
        (
            'state_dir = "/var/lib/cellguard"',
            "state_dir = []",
            "daemon.state_dir: must be a folder for state, spool and the embedded store, "
            "got an array",
        ),
        (
            "shift_ratio = 2.5",
            'shift_ratio = "2.5"',
            'channels[0].detector.shift_ratio: must be a number, got "2.5"',
        ),
        (
            "cycles = 1000",
            "cycles = 1.5",
            "channels[1].protocol.cycles: must be an integer 1..65535 (whole cycles), got 1.5",
        ),
        (
            # More than a step file can repeat: refused at load, not when the channel starts.
            "cycles = 1000",
            "cycles = 100000",
            "channels[1].protocol.cycles: must be an integer 1..65535 (whole cycles), got 100000",
        ),
    ],
)
def test_type_errors_name_the_key_and_what_is_allowed(old: str, new: str, expected: str) -> None:
    assert old in FULL
    assert refusal(FULL.replace(old, new, 1)) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"cell": '{ type = "asymmetric", thick_li_um = 100, thin_li_um = 20 }'},
            "channels[0].cell.area_cm2: required: electrode area in cm² > 0 "
            "(a 10 mm disc is 0.785)",
            id="area-missing",
        ),
        pytest.param(
            {"cell": '{ type = "full", area_cm2 = -1 }'},
            "channels[0].cell.area_cm2: must be electrode area in cm² > 0 "
            "(a 10 mm disc is 0.785), got -1",
            id="area-negative",
        ),
        pytest.param(
            {"cell": '{ type = "coin", area_cm2 = 1 }'},
            'channels[0].cell.type: must be one of symmetric, asymmetric, full, got "coin"',
            id="cell-type",
        ),
        pytest.param(
            {"cell": '{ type = "asymmetric", area_cm2 = 1, thick_li_um = 20, thin_li_um = 100 }'},
            "channels[0].cell.thin_li_um: must be thinner than thick_li_um (20 µm) in an "
            "asymmetric cell, got 100",
            id="thin-not-thinner",
        ),
        pytest.param(
            {"cell": '{ type = "asymmetric", area_cm2 = 1, thick_li_um = 100 }'},
            "channels[0].cell.thin_li_um: required for an asymmetric cell: the thin working "
            "electrode, a Li foil thickness in µm > 0 (e.g. 100, 50 or 20)",
            id="thin-missing",
        ),
        pytest.param(
            {"cell": '{ type = "symmetric", area_cm2 = 1, thick_li_um = 100, thin_li_um = 50 }'},
            "channels[0].cell.thin_li_um: a symmetric cell has two equal Li electrodes: must "
            'equal thick_li_um (100 µm), got 50; use type = "asymmetric" for a thin one',
            id="symmetric-unequal",
        ),
        pytest.param(
            {"cell": '{ type = "symmetric", area_cm2 = 1 }'},
            "channels[0].cell.thick_li_um: required for a symmetric cell: a Li foil thickness "
            "in µm > 0 (e.g. 100, 50 or 20) (both electrodes)",
            id="symmetric-thickness-missing",
        ),
        pytest.param(
            {"cell": '{ type = "full", area_cm2 = 1, thin_li_um = 20 }'},
            "channels[0].cell.thin_li_um: a full cell has no Li foil thicknesses; remove this key",
            id="full-with-li",
        ),
        pytest.param(
            {"cell": ""},
            'channels[0].cell: required: cell = { type = "symmetric" | "asymmetric" | "full", '
            "area_cm2 = ... }",
            id="cell-missing",
        ),
        pytest.param(
            {"cell": '"asymmetric"'},
            "channels[0].cell: must be a table (type, area_cm2, thick_li_um, thin_li_um), "
            'got "asymmetric"',
            id="cell-not-table",
        ),
        pytest.param(
            {"instrument": '"ct4008-b"'},
            "channels[0].instrument: 'ct4008-b' is not one of the [[instruments]] names (ct4008-a)",
            id="unknown-instrument",
        ),
        pytest.param(
            {"channel": '"21-1"'},
            "channels[0].channel: '21-1' is not a Neware channel id; write "
            "devid-subdevid-chlid, e.g. 21-1-3",
            id="channel-id",
        ),
        pytest.param(
            {"channel": '"21-0-3"'},
            "channels[0].channel: '21-0-3': subdevid and chlid start at 1",
            id="channel-id-zero",
        ),
        pytest.param(
            {"channel": "213"},
            "channels[0].channel: must be a channel id: devid-subdevid-chlid, e.g. 21-1-3, got 213",
            id="channel-not-string",
        ),
        pytest.param(
            {"mode": '"watch"'},
            'channels[0].mode: must be one of monitor, run, got "watch"',
            id="mode",
        ),
        pytest.param(
            {"mode": '"run"'},
            'channels[0].protocol: required for mode = "run": protocol = { kind = '
            '"galvanostatic", current_density_ma_cm2 = ..., areal_capacity_mah_cm2 = ..., '
            'cycles = ... } or protocol_file = "run.toml" (a protocol script)',
            id="run-without-protocol",
        ),
        pytest.param(
            {"protocol": '{ kind = "galvanostatic", cycles = 1 }'},
            'channels[0].protocol: only for mode = "run"; in mode = "monitor" the cycler runs '
            "its own step file",
            id="monitor-with-protocol",
        ),
        pytest.param(
            {
                "mode": '"run"',
                "protocol": '{ kind = "cv", current_density_ma_cm2 = 0.5, '
                "areal_capacity_mah_cm2 = 0.5, cycles = 1 }",
            },
            'channels[0].protocol.kind: must be one of galvanostatic, got "cv"',
            id="protocol-kind",
        ),
        pytest.param(
            {"mode": '"run"', "protocol": '{ kind = "galvanostatic", cycles = 1 }'},
            "channels[0].protocol.current_density_ma_cm2: required: a current density in "
            "mA cm⁻² > 0 (standard: 0.5)",
            id="protocol-density-missing",
        ),
        pytest.param(
            {
                "mode": '"run"',
                "cell": '{ type = "full", area_cm2 = 1 }',
                "protocol": '{ kind = "galvanostatic", cycles = 1 }',
            },
            "channels[0].protocol.kind: galvanostatic Li plating/stripping needs a symmetric "
            "or asymmetric cell, not a full cell",
            id="protocol-on-full-cell",
        ),
        pytest.param(
            {
                "mode": '"run"',
                "cell": '{ type = "asymmetric", area_cm2 = 1, thick_li_um = 100, thin_li_um = 1 }',
                "protocol": '{ kind = "galvanostatic", current_density_ma_cm2 = 0.5, '
                "areal_capacity_mah_cm2 = 0.5, cycles = 10 }",
            },
            "channels[0].protocol.areal_capacity_mah_cm2: 0.5 mAh cm⁻² per half cycle strips "
            "all of the 1 µm working electrode (0.205 mAh cm⁻²); must be less than that",
            id="protocol-strips-everything",
        ),
        pytest.param(
            {
                "mode": '"run"',
                "protocol": '{ kind = "galvanostatic", current_density_ma_cm2 = 0.5, '
                "areal_capacity_mah_cm2 = 0.5, cycles = 10, rest_before_s = -1 }",
            },
            "channels[0].protocol.rest_before_s: must be a time in s >= 0 (0 for no rest), got -1",
            id="protocol-rest",
        ),
        pytest.param(
            {"detector": "{ shift_ratio = 0.5 }"},
            "channels[0].detector.drop_ratio: need near_zero_ratio < drop_ratio < slide_ratio "
            "< 1 < shift_ratio",
            id="detector-order",
        ),
        pytest.param(
            {"detector": "{ settle_s = -3 }"},
            "channels[0].detector.settle_s: must be a finite number > 0, got -3.0",
            id="detector-negative",
        ),
        pytest.param(
            {"detector": '{ cell = "full" }'},
            "channels[0].detector.cell: unknown key; allowed keys are "
            + ", ".join(
                f.name
                for f in __import__("dataclasses").fields(DetectorSettings)
                if f.name not in ("cell", "overrides")
            ),
            id="detector-cell-not-overridable",
        ),
    ],
)
def test_channel_refusals(fields: dict[str, str], expected: str) -> None:
    """Each rule on a channel gives one line naming the channel's key."""
    assert refusal(with_channel(**fields)) == expected


def test_duplicate_channel_on_one_instrument_is_refused() -> None:
    text = with_channel() + CHANNEL
    assert refusal(text) == (
        "channels[1].channel: 21-1-3 on ct4008-a is already channels[0]; a channel can be "
        "configured only once"
    )


def test_same_channel_on_two_instruments_is_allowed() -> None:
    second = MINIMAL.split("\n", 3)[3].replace("ct4008-a", "ct4008-b")
    text = with_channel() + second + CHANNEL.replace("ct4008-a", "ct4008-b")
    config = parse_config(text, env={})
    assert [c.instrument for c in config.channels] == ["ct4008-a", "ct4008-b"]
    assert len(config.channels_of("ct4008-b")) == 1


def test_duplicate_instrument_name_is_refused() -> None:
    text = MINIMAL + MINIMAL.split("\n", 3)[3]
    assert refusal(text) == (
        "instruments[1].name: 'ct4008-a' is already instruments[0]; names must be unique"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '[daemon]\nstate_dir = "/s"\n',
            "instruments: required: at least one [[instruments]] table (name, driver, host, "
            "port, poll_interval_s)",
            id="no-instruments",
        ),
        pytest.param(
            MINIMAL.replace("[daemon]\n", "").replace('state_dir = "/var/lib/cellguard"\n', ""),
            'daemon: required: a [daemon] table with state_dir = "/var/lib/cellguard"',
            id="no-daemon",
        ),
        pytest.param(
            'daemon = "x"\n' + MINIMAL.split("\n", 3)[3],
            'daemon: must be a table (state_dir and log_level), got "x"',
            id="daemon-not-table",
        ),
        pytest.param(
            MINIMAL.replace("[[instruments]]", "[instruments]"),
            "instruments: must be an array of tables: write [[instruments]], got a table",
            id="instruments-single-brackets",
        ),
        pytest.param(
            MINIMAL + "channels = [1]\n",
            "instruments[0].channels: unknown key; allowed keys are name, driver, host, port, "
            "poll_interval_s, timeout_s, step_file_dir, download_interval_s, username, "
            "username_env, username_file, password, password_env, password_file, serial_port, "
            "baudrate, device_id, register_map, registers, current_range_a, current_range_ma, "
            "voltage_range_v, current_limit_a, keep_output_on, timezone",
            id="channels-inside-instrument",
        ),
        pytest.param(
            "channels = [1]\n" + MINIMAL,
            "channels[0]: must be a table: write [[channels]], got 1",
            id="channels-not-tables",
        ),
        pytest.param(
            MINIMAL.replace('host = "127.0.0.1"\n', ""),
            "instruments[0].host: required: the instrument server's host name or IP address",
            id="instrument-host-missing",
        ),
        pytest.param(
            MINIMAL + '[mqtt]\nhost = "h"\n',
            'mqtt.topic_prefix: required: a topic prefix such as "cellguard/lab1"',
            id="mqtt-prefix-missing",
        ),
        pytest.param(
            MINIMAL + '[influxdb]\nurl = "http://h:8086"\norg = "o"\n',
            'influxdb.bucket: required: the bucket, e.g. "cycling" ("db/rp" for InfluxDB 1.8)',
            id="influx-bucket-missing",
        ),
    ],
)
def test_structure_refusals(text: str, expected: str) -> None:
    assert refusal(text) == expected


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "cellguard.toml"
    path.write_text(MINIMAL + "\nport = = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: not valid TOML: ")
    assert "line 11" in message
    assert isinstance(info.value.__cause__, __import__("tomllib").TOMLDecodeError)


def test_duplicate_toml_key_is_a_syntax_error() -> None:
    message = refusal(MINIMAL.replace("port = 502", "port = 502\nport = 503"), source="lab.toml")
    assert message.startswith("lab.toml: not valid TOML: ")
    assert "line 9" in message


def test_missing_or_undecodable_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read the configuration file: No"):
        load_config(missing)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(MINIMAL.encode() + b"# \xb5m\n")
    with pytest.raises(ConfigError, match=r"latin1\.toml: must be UTF-8 text \(byte \d+ is not\)"):
        load_config(latin1)


def test_config_error_is_a_cellguard_error() -> None:
    """The CLI catches one root and exits 2 with the message."""
    with pytest.raises(CellguardError):
        parse_config("", env={})


def test_config_objects_are_frozen() -> None:
    config = parse_config(FULL, env=ENV)
    with pytest.raises(AttributeError):
        config.daemon.state_dir = Path("/tmp")  # type: ignore[misc]
    assert isinstance(config, Config)
    assert isinstance(config.channels[0], ChannelSettings)
    assert hash(config.channels[0].channel) == hash(ChannelId(21, 1, 3))


def test_describe_is_a_short_summary() -> None:
    text = parse_config(FULL, env=ENV).describe()
    assert "InfluxDB http://127.0.0.1:8086" in text
    assert "MQTT 127.0.0.1:1883" in text
    assert "instrument ct4008-a: neware at 127.0.0.1:502" in text
    assert "21-1-3 monitor asymmetric 0.785 cm² Li 100|20 µm LPSC:LGPS 4:1" in text
    assert "detector shift_ratio=2.5" in text
    assert "21-1-4 run symmetric" in text
    assert len(text.splitlines()) == 7
    assert "embedded SQLite" in parse_config(MINIMAL, env={}).describe()
    assert json.dumps(text)  # plain text, nothing unprintable


# ------------------------------------------------------------------ deploy/


def _yaml_keys(text: str, indent: int) -> list[str]:
    """The mapping keys at exactly ``indent`` spaces (a light check: no PyYAML here)."""
    pattern = rf"^ {{{indent}}}([A-Za-z_][\w.-]*):(?:\s|$)"
    return re.findall(pattern, text, flags=re.MULTILINE)


def _check_yaml_text(text: str) -> None:
    """What a YAML parser would refuse first: tabs, odd indents, unbalanced quotes."""
    for number, line in enumerate(text.splitlines(), 1):
        assert "\t" not in line, f"line {number}: tab"
        body = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"line {number}: odd indent"
        assert body.count('"') % 2 == 0, f"line {number}: unbalanced quotes"


def test_docker_compose_has_influxdb_mosquitto_and_grafana() -> None:
    """InfluxDB 2 initialised, Mosquitto 2 with its auth files, Grafana provisioned."""
    text = (DEPLOY / "docker-compose.yml").read_text()
    _check_yaml_text(text)
    assert _yaml_keys(text, 0) == ["name", "services", "volumes"]
    assert _yaml_keys(text, 2)[:3] == ["influxdb", "mosquitto", "grafana"]
    assert "image: influxdb:2." in text
    assert "image: eclipse-mosquitto:2" in text
    assert "image: grafana/grafana-oss:" in text
    for env in ("MODE: setup", "ORG: lab", "BUCKET: cycling", "ADMIN_TOKEN: ${CELLGUARD_"):
        assert f"DOCKER_INFLUXDB_INIT_{env}" in text
    for name in ("mosquitto.conf", "passwd", "acl"):
        assert f"./mosquitto/{name}:/mosquitto/config/{name}:ro" in text
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in text
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in text
    # No secret is written into the file: every password comes from .env.
    assert not re.search(r"(PASSWORD|TOKEN):\s+(?!\$\{)", text)


def test_grafana_provisioning_matches_the_dashboard() -> None:
    """The dashboard's datasource uid is the provisioned one, and the path is loaded."""
    datasource = (DEPLOY / "grafana/provisioning/datasources/influxdb.yml").read_text()
    provider = (DEPLOY / "grafana/provisioning/dashboards/cellguard.yml").read_text()
    for text in (datasource, provider):
        _check_yaml_text(text)
        assert text.startswith("#") or text.startswith("apiVersion")
        assert "apiVersion: 1" in text
    assert "uid: cellguard-influxdb" in datasource
    assert "version: Flux" in datasource
    assert "defaultBucket: cycling" in datasource
    assert "token: $CELLGUARD_INFLUX_TOKEN" in datasource
    assert "path: /var/lib/grafana/dashboards" in provider

    dashboard = json.loads((DEPLOY / "grafana/dashboards/cellguard.json").read_text())
    uids = {
        json.dumps(p["datasource"], sort_keys=True)
        for p in dashboard["panels"] + dashboard["annotations"]["list"][1:]
    }
    assert uids == {json.dumps({"type": "influxdb", "uid": "cellguard-influxdb"}, sort_keys=True)}


def test_dashboard_shows_voltage_current_polarization_and_halts() -> None:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/cellguard.json").read_text())
    assert dashboard["uid"] == "cellguard"
    panels = {p["title"]: p for p in dashboard["panels"]}
    assert {"Voltage", "Current", "Polarization", "Events"} <= set(panels)
    queries = {title: p["targets"][0]["query"] for title, p in panels.items()}
    assert 'r._field == "voltage_v"' in queries["Voltage"]
    assert 'r._field == "current_a"' in queries["Current"]
    # Polarization per cycle comes from the analytics tap's own measurement.
    assert 'r._field == "polarization_v"' in queries["Polarization"]
    assert '"cellguard_cycles"' in queries["Polarization"]
    for title in ("Voltage", "Current", "Polarization"):
        assert 'group(columns: ["instrument", "channel"])' in queries[title]
        assert panels[title]["fieldConfig"]["defaults"]["unit"] in {"volt", "mamp", "mvolt"}
    for title in ("Voltage", "Current"):
        assert '"cellguard_samples"' in queries[title]
    assert '"cellguard_events"' in queries["Events"]
    halts = next(a for a in dashboard["annotations"]["list"] if a["name"] == "Halts")
    assert halts["enable"] is True
    assert '"cellguard_events"' in halts["target"]["query"]
    assert 'r.kind == "halt"' in halts["target"]["query"]
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["instrument", "channel"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_queries_only_measurements_fields_and_tags_the_sink_writes() -> None:
    """Every measurement, field and tag a query names is in a line the sink writes."""
    tags = ChannelTags("ct", "1-1-1", "t1", "SEI", "asymmetric")
    lines = [
        sample_line(SampleRecord(tags, 1.7e9, 60.0, 0.01, 4e-4, 0.1, 0.2, 1, 1, 1)),
        event_line(
            EventRecord(tags, "halt", 1.7e9, "depletion", "plateau", "why", {"measured_v": 5.0})
        ),
        cycle_line(CycleRow(tags, 3, 1.7e9, 7200.0, 0.012, 0.015, 3.0, True, "depletion", 0.7)),
    ]
    written: dict[str, set[str]] = {}
    for line in lines:
        head, body, _ = line.split(" ")
        measurement, *tag_pairs = head.split(",")
        names = {pair.split("=")[0] for pair in tag_pairs + body.split(",")}
        written.setdefault(measurement, set()).update(names)
    dashboard = json.loads((DEPLOY / "grafana/dashboards/cellguard.json").read_text())
    queries = [t["query"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [a["target"]["query"] for a in dashboard["annotations"]["list"][1:]]
    queries += [v["query"] for v in dashboard["templating"]["list"]]
    for query in queries:
        measurements = re.findall(r'r\._measurement == "(\w+)"', query)
        assert measurements, query
        known = set().union(*(written[m] for m in measurements))
        for name in re.findall(r'r\._field == "(\w+)"', query):
            assert name in known, (name, query)
        for name in re.findall(r"exists r\.(\w+)", query):
            assert name in known, (name, query)
    assert "cellguard_cycles" in json.dumps(dashboard)


def test_systemd_unit_runs_the_daemon_hardened() -> None:
    text = (DEPLOY / "systemd/cellguard.service").read_text()
    sections = re.findall(r"^\[(\w+)\]$", text, flags=re.MULTILINE)
    assert sections == ["Unit", "Service", "Install"]
    settings = dict(
        line.split("=", 1)
        for line in text.splitlines()
        if line and not line.startswith(("#", "[")) and "=" in line
    )
    assert settings["Type"] == "simple"
    assert settings["ExecStart"] == (
        "/opt/cellguard/.venv/bin/cellguard run /etc/cellguard/cellguard.toml"
    )
    assert settings["Restart"] == "always"
    assert settings["RestartSec"] == "5"
    assert settings["RestartPreventExitStatus"] == "2"  # a refused config: no restart loop
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ReadWritePaths"] == "/var/lib/cellguard"
    assert settings["StateDirectory"] == "cellguard"
    assert settings["User"] == "cellguard"
    assert settings["EnvironmentFile"] == "-/etc/cellguard/secrets.env"
    assert settings["WantedBy"] == "multi-user.target"


def test_deploy_docs_cover_windows_and_scale_out() -> None:
    windows = (DEPLOY / "windows/README.md").read_text()
    assert "nssm install cellguard" in windows
    assert "WindowsSelectorEventLoopPolicy" in windows
    readme = (DEPLOY / "README.md").read_text()
    assert "## Scale-out" in readme
    for word in ("topic_prefix", "cellguard_samples", "cellguard_events", "docker compose up"):
        assert word in readme


def test_each_driver_takes_the_keys_of_its_settings_dataclass() -> None:
    """The config is a union tagged by driver: every key an [[instruments]] entry may
    hold is a field of some driver's settings, and every driver has a guard builder."""
    from cellguard.daemon.config import _INSTRUMENT_KEYS, DRIVERS  # noqa: PLC0415
    from cellguard.daemon.guard.registry import REGISTRY  # noqa: PLC0415

    fields = {f.name for info in DRIVERS.values() for f in dataclasses.fields(info.settings)}
    assert {k.removesuffix("_env").removesuffix("_file") for k in _INSTRUMENT_KEYS} == fields
    assert set(REGISTRY) == set(DRIVERS)
    for driver, info in DRIVERS.items():
        assert dataclasses.fields(info.settings)  # a dataclass
        assert [f.default for f in dataclasses.fields(info.settings) if f.name == "driver"] == [
            driver
        ]


def test_a_protocol_beyond_the_channels_range_is_refused_at_start_naming_the_key() -> None:
    """Issue 15: 39 mA on a 10 mA CT-4008 channel used to be accepted, then left the
    instrument's valid channels unguarded in a reconnect loop; it is a config error."""
    too_much = FULL.replace(
        "protocol.current_density_ma_cm2 = 0.5", "protocol.current_density_ma_cm2 = 49.7"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(too_much, env=ENV)
    message = str(info.value)
    assert message.startswith("channels[1].protocol.current_density_ma_cm2: ")
    assert "39.015 mA" in message
    assert "at most 10 mA" in message
    # An instrument whose channels take more says so, and the protocol is accepted.
    wider = too_much.replace("timeout_s = 10.0\n", "timeout_s = 10.0\ncurrent_range_ma = 50\n")
    config = parse_config(wider, env=ENV)
    instrument = config.instruments[0]
    assert isinstance(instrument, NewareSettings)
    assert instrument.current_range_ma == 50.0
    beyond_volts = FULL.replace(
        "protocol.record_interval_s = 60",
        "protocol.record_interval_s = 60\nprotocol.voltage_limit_v = 6",
    )
    with pytest.raises(ConfigError, match=r"^channels\[1\]\.protocol\.voltage_limit_v: "):
        parse_config(beyond_volts, env=ENV)


# -- issue 16 item 7: physical bounds, the instrument's zone, a usable state_dir ----------

SMU_INSTRUMENT = """
[[instruments]]
name = "smu-1"
driver = "smu"
serial_port = "/dev/ttyUSB0"
"""


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "poll_interval_s = 0.001",
            "instruments[0].poll_interval_s: must be a time in s from 0.01 to 600 (e.g. 1.0), "
            "got 0.001",
        ),
        (
            "poll_interval_s = 3600",
            "instruments[0].poll_interval_s: must be a time in s from 0.01 to 600 (e.g. 1.0), "
            "got 3600",
        ),
        (
            "download_interval_s = 0.001",
            "instruments[0].download_interval_s: must be a time in s from 0.01 to 86400 (how "
            "often the recorded history is fetched), got 0.001",
        ),
        (
            "download_interval_s = 1e6",
            "instruments[0].download_interval_s: must be a time in s from 0.01 to 86400 (how "
            "often the recorded history is fetched), got 1000000.0",
        ),
        (
            "timeout_s = 3600",
            "instruments[0].timeout_s: must be a time in s from 0.01 to 600 (e.g. 10.0), got 3600",
        ),
        (
            "voltage_range_v = 10",
            "instruments[0].voltage_range_v: must be a channel's voltage range in V from 0.001 "
            "to 5 (a CT-4008: 5), got 10",
        ),
        (
            "current_range_ma = 1e7",
            "instruments[0].current_range_ma: must be a channel's current range in mA from "
            "0.001 to 100000 (a CT-4008-5V10mA: 10), got 10000000.0",
        ),
        (
            "current_range_ma = inf",
            "instruments[0].current_range_ma: must be a channel's current range in mA from "
            "0.001 to 100000 (a CT-4008-5V10mA: 10), got inf",
        ),
    ],
)
def test_instrument_keys_beyond_their_physical_bounds_are_refused_naming_the_range(
    line: str, expected: str
) -> None:
    """A poll of 1 ms or an hour, a 10 V range on a ±5 V channel, a current range in
    the wrong unit: one line naming the key and the range allowed (used to be accepted)."""
    key = line.split(" = ", maxsplit=1)[0]
    text = MINIMAL.replace("poll_interval_s = 1.0\n", "") + (
        "" if key == "poll_interval_s" else "poll_interval_s = 1.0\n"
    )
    assert refusal(text + line + "\n") == expected


def test_a_host_driven_instruments_poll_has_the_same_bounds() -> None:
    """The source-meter's poll (how often commands are looked at) is bounded too."""
    text = MINIMAL + SMU_INSTRUMENT + "poll_interval_s = 900\n"
    assert refusal(text) == (
        "instruments[1].poll_interval_s: must be a time in s from 0.01 to 600 (how often "
        "operator commands are looked at), got 900"
    )


def test_the_bounds_themselves_are_accepted() -> None:
    """10 ms and 10 min polls, a 5 V range: at the edge, still allowed."""
    for poll_s in (0.01, 600):
        text = MINIMAL.replace("poll_interval_s = 1.0", f"poll_interval_s = {poll_s}")
        config = parse_config(text + "voltage_range_v = 5\ndownload_interval_s = 86400\n")
        instrument = config.instruments[0]
        assert isinstance(instrument, NewareSettings)
        assert (instrument.poll_interval_s, instrument.voltage_range_v) == (poll_s, 5.0)
        assert instrument.download_interval_s == 86400.0


def test_the_bts_pcs_zone_is_an_iana_name_checked_at_start() -> None:
    """``timezone`` names the zone of the BTS PC's clock; a misspelt zone is refused
    (it would date every recorded sample wrongly); none means this PC's zone."""
    config = parse_config(MINIMAL + 'timezone = "Europe/Berlin"\n')
    instrument = config.instruments[0]
    assert isinstance(instrument, NewareSettings)
    assert instrument.timezone == "Europe/Berlin"
    default = parse_config(MINIMAL).instruments[0]
    assert isinstance(default, NewareSettings)
    assert default.timezone is None
    assert refusal(MINIMAL + 'timezone = "Europe/Berlln"\n') == (
        'instruments[0].timezone: must be an IANA time zone name such as "Europe/Berlin" or '
        '"UTC" (the zone of the BTS PC\'s clock), got "Europe/Berlln"'
    )
    assert refusal(MINIMAL + 'timezone = "../../etc/passwd"\n').startswith(
        "instruments[0].timezone: must be an IANA time zone name"
    )
    assert refusal(MINIMAL + SMU_INSTRUMENT + 'timezone = "UTC"\n') == (
        "instruments[1].timezone: only for driver neware, not 'smu'"
    )


@pytest.mark.parametrize("where", ["under a file", "a file"])
def test_a_state_dir_that_cannot_be_a_folder_exits_2_with_one_line(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state_dir under a regular file (or a file itself) cannot be created, by root
    either: ``cellguard run`` exits 2 with one line naming daemon.state_dir, before
    anything starts (it used to exit 1 with an OS error, as if a restart could help)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder belongs\n")
    state_dir = blocker / "state" if where == "under a file" else blocker
    path = tmp_path / "cellguard.toml"
    path.write_text(MINIMAL.replace("/var/lib/cellguard", str(state_dir)) + CHANNEL)
    assert main(["run", str(path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("cellguard: error: daemon.state_dir: ")
    assert f"{blocker} is a file, not a folder" in lines[0]
    assert blocker.read_text() == "a file where a folder belongs\n"


def test_a_state_dir_that_exists_or_can_be_made_passes_the_check(tmp_path: Path) -> None:
    """The check refuses only what cannot work: a missing folder under a writable one
    is fine (the daemon makes it), and nothing is created by checking."""
    check_state_dir(tmp_path)
    check_state_dir(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()
