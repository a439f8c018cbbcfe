"""``driver = "maccor"`` in the config: what it takes, and errors that name the field."""

from __future__ import annotations

import pytest

from cellguard.daemon.config import MaccorSettings, parse_config
from cellguard.drivers.errors import ConfigError

INSTRUMENT = (
    '[daemon]\nstate_dir = "/tmp/cg-maccor-config"\n'
    '[[instruments]]\nname = "maccor-a"\ndriver = "maccor"\nhost = "10.0.0.6"\n'
    "poll_interval_s = 1.0\n"
)
CELL = 'cell = { type = "symmetric", area_cm2 = 0.785, thick_li_um = 100 }\n'


def _channel(channel: str = "3", extra: str = 'mode = "monitor"\n') -> str:
    return f'[[channels]]\ninstrument = "maccor-a"\nchannel = "{channel}"\n{extra}{CELL}'


def test_a_maccor_instrument_and_its_channels_are_read() -> None:
    config = parse_config(
        INSTRUMENT
        + "current_limit_a = 0.01\n"
        + _channel("3")
        + _channel("4", 'mode = "run"\nprocedure = "cellguard-cycling"\n')
    )
    (inst,) = config.instruments
    assert isinstance(inst, MaccorSettings)
    assert (inst.host, inst.port, inst.current_limit_a) == ("10.0.0.6", 57570, 0.01)
    monitor, run = config.channels
    assert (monitor.channel, monitor.mode, monitor.schedule) == ("3", "monitor", None)
    assert (run.channel, run.schedule) == ("4", "cellguard-cycling")


def test_without_a_current_limit_none_is_programmed() -> None:
    (inst,) = parse_config(INSTRUMENT + _channel()).instruments
    assert isinstance(inst, MaccorSettings)
    assert inst.current_limit_a is None


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        (INSTRUMENT + _channel("0"), "channels[0].channel", "1, 2, ..."),
        (INSTRUMENT + _channel("1-1-3"), "channels[0].channel", "as MacTest32 shows"),
        (
            INSTRUMENT + _channel("3", 'mode = "run"\n'),
            "channels[0].procedure",
            'required for mode = "run"',
        ),
        (
            INSTRUMENT + _channel("3", 'mode = "monitor"\nprocedure = "p"\n'),
            "channels[0].procedure",
            "only for mode",
        ),
        (
            INSTRUMENT + _channel("3", 'mode = "run"\nschedule = "a.sdx"\n'),
            "channels[0].schedule",
            'only for driver "arbin"',
        ),
        (
            INSTRUMENT + _channel("3", 'mode = "run"\nprotocol_file = "x.toml"\n'),
            "channels[0].protocol_file",
            'not for driver "maccor"',
        ),
        (
            INSTRUMENT + 'username = "u"\npassword = "p"\n' + _channel(),
            "instruments[0].username",
            "only for driver",
        ),
        (
            INSTRUMENT + "current_limit_a = -1\n" + _channel(),
            "instruments[0].current_limit_a",
            "> 0",
        ),
    ],
)
def test_bad_maccor_entries_name_the_field(text: str, field: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.field == field
    assert says in caught.value.problem


def test_a_procedure_on_an_arbin_channel_is_refused() -> None:
    text = (
        '[daemon]\nstate_dir = "/tmp/cg-maccor-config"\n'
        '[[instruments]]\nname = "a"\ndriver = "arbin"\nhost = "h"\n'
        'poll_interval_s = 1.0\nusername = "u"\npassword = "p"\n'
        '[[channels]]\ninstrument = "a"\nchannel = "1"\nmode = "monitor"\n'
        'procedure = "p"\n' + CELL
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.field == "channels[0].procedure"
    assert 'only for driver "maccor"' in caught.value.problem
