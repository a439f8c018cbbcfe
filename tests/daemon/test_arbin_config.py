"""``driver = "arbin"`` in the config: what it takes, and errors that name the field."""

from __future__ import annotations

import pytest

from cellguard.daemon.config import ArbinSettings, parse_config
from cellguard.drivers.errors import ConfigError

INSTRUMENT = (
    '[daemon]\nstate_dir = "/tmp/cg-arbin-config"\n'
    '[[instruments]]\nname = "arbin-a"\ndriver = "arbin"\nhost = "10.0.0.5"\n'
    "poll_interval_s = 1.0\n"
)
LOGIN = 'username = "lab"\npassword = "pw"\n'
CELL = 'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100 }\n'


def _channel(channel: str = "3", extra: str = 'mode = "monitor"\n') -> str:
    return f'[[channels]]\ninstrument = "arbin-a"\nchannel = "{channel}"\n{extra}{CELL}'


def test_an_arbin_instrument_and_its_channels_are_read() -> None:
    config = parse_config(
        INSTRUMENT
        + LOGIN
        + _channel("3")
        + _channel("4", 'mode = "run"\nschedule = "cellguard-cycling.sdx"\n')
    )
    (inst,) = config.instruments
    assert isinstance(inst, ArbinSettings)
    assert (inst.host, inst.port, inst.username.reveal()) == ("10.0.0.5", 9031, "lab")
    monitor, run = config.channels
    assert (monitor.channel, monitor.mode, monitor.schedule) == ("3", "monitor", None)
    assert (run.channel, run.schedule) == ("4", "cellguard-cycling.sdx")
    assert "schedule 'cellguard-cycling.sdx'" in config.describe()


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        (INSTRUMENT + _channel(), "instruments[0].username", "registered in MITS Pro"),
        (INSTRUMENT + 'username = "lab"\n', "instruments[0].password", "CTI login needs both"),
        (INSTRUMENT + LOGIN + _channel("0"), "channels[0].channel", "1, 2, ..."),
        (INSTRUMENT + LOGIN + _channel("1-1-3"), "channels[0].channel", "as MITS Pro shows"),
        (
            INSTRUMENT + LOGIN + _channel("3", 'mode = "run"\n'),
            "channels[0].schedule",
            'required for mode = "run"',
        ),
        (
            INSTRUMENT + LOGIN + _channel("3", 'mode = "monitor"\nschedule = "a.sdx"\n'),
            "channels[0].schedule",
            "only for mode",
        ),
        (
            INSTRUMENT + LOGIN + _channel("3", 'mode = "run"\nprotocol_file = "x.toml"\n'),
            "channels[0].protocol_file",
            'not for driver "arbin"',
        ),
        (
            INSTRUMENT + LOGIN + "step_file_dir = '/tmp'\n" + _channel(),
            "instruments[0].step_file_dir",
            "only for driver neware",
        ),
    ],
)
def test_bad_arbin_entries_name_the_field(text: str, field: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.field == field
    assert says in caught.value.problem


def test_a_schedule_on_a_neware_channel_is_refused() -> None:
    text = (
        '[daemon]\nstate_dir = "/tmp/cg-arbin-config"\n'
        '[[instruments]]\nname = "n"\ndriver = "neware"\nhost = "h"\nport = 502\n'
        "poll_interval_s = 1.0\n"
        '[[channels]]\ninstrument = "n"\nchannel = "1-1-1"\nmode = "monitor"\n'
        'schedule = "a.sdx"\n' + CELL
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.field == "channels[0].schedule"
    assert 'only for driver "arbin"' in caught.value.problem
