"""What the numbers in an EC-Lab ``.mpr`` file mean: column ids, flag bits, techniques.

EC-Lab does not publish the format. These facts were learned from public readers'
documentation and checked against real files (see tests/fixtures/biologic/README.md);
the tables are ours. A data module lists one id per column; the id fixes the column's
name, its binary type and its unit. Ids above 255 appear in both layouts (467 and 211
are the same quantity, written by different EC-Lab versions).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One data column: EC-Lab's label, the numpy dtype of its cells, and its unit."""

    name: str
    dtype: str
    unit: str


# Flag ids do not take bytes of their own: all flags present share one byte in the
# record, placed where the first flag id is listed. id -> (name, bit mask).
FLAG_BITS: dict[int, tuple[str, int]] = {
    1: ("mode", 0x03),  # 1 galvanostatic (CC), 2 potentiostatic (CV), 3 rest (OCV)
    2: ("ox/red", 0x04),
    3: ("error", 0x08),
    21: ("control changes", 0x10),
    31: ("Ns changes", 0x20),
    65: ("counter inc.", 0x80),
}

MODE_CC = 1
MODE_CV = 2
MODE_REST = 3

_F4, _F8, _U1, _U2, _U4 = "<f4", "<f8", "u1", "<u2", "<u4"

COLUMNS: dict[int, Column] = {
    4: Column("time/s", _F8, "s"),
    5: Column("control/V/mA", _F4, "V or mA"),
    6: Column("Ewe/V", _F4, "V"),
    7: Column("dq/mA.h", _F8, "mA.h"),
    8: Column("I/mA", _F4, "mA"),
    9: Column("Ece/V", _F4, "V"),
    11: Column("<I>/mA", _F8, "mA"),
    13: Column("(Q-Qo)/mA.h", _F8, "mA.h"),
    16: Column("Analog IN 1/V", _F4, "V"),
    17: Column("Analog IN 2/V", _F4, "V"),
    19: Column("control/V", _F4, "V"),
    20: Column("control/mA", _F4, "mA"),
    23: Column("dQ/mA.h", _F8, "mA.h"),
    24: Column("cycle number", _F8, ""),
    26: Column("Rapp/Ohm", _F4, "Ohm"),
    27: Column("Ewe-Ece/V", _F4, "V"),
    32: Column("freq/Hz", _F4, "Hz"),
    33: Column("|Ewe|/V", _F4, "V"),
    34: Column("|I|/A", _F4, "A"),
    35: Column("Phase(Z)/deg", _F4, "deg"),
    36: Column("|Z|/Ohm", _F4, "Ohm"),
    37: Column("Re(Z)/Ohm", _F4, "Ohm"),
    38: Column("-Im(Z)/Ohm", _F4, "Ohm"),
    39: Column("I Range", _U2, ""),
    69: Column("R/Ohm", _F4, "Ohm"),
    70: Column("P/W", _F4, "W"),
    74: Column("|Energy|/W.h", _F8, "W.h"),
    75: Column("Analog OUT/V", _F4, "V"),
    76: Column("<I>/mA", _F4, "mA"),
    77: Column("<Ewe>/V", _F4, "V"),
    78: Column("Cs-2/µF-2", _F4, "µF-2"),
    96: Column("|Ece|/V", _F4, "V"),
    98: Column("Phase(Zce)/deg", _F4, "deg"),
    99: Column("|Zce|/Ohm", _F4, "Ohm"),
    100: Column("Re(Zce)/Ohm", _F4, "Ohm"),
    101: Column("-Im(Zce)/Ohm", _F4, "Ohm"),
    123: Column("Energy charge/W.h", _F8, "W.h"),
    124: Column("Energy discharge/W.h", _F8, "W.h"),
    125: Column("Capacitance charge/µF", _F8, "µF"),
    126: Column("Capacitance discharge/µF", _F8, "µF"),
    131: Column("Ns", _U2, ""),
    163: Column("|Estack|/V", _F4, "V"),
    168: Column("Rcmp/Ohm", _F4, "Ohm"),
    169: Column("Cs/µF", _F4, "µF"),
    172: Column("Cp/µF", _F4, "µF"),
    173: Column("Cp-2/µF-2", _F4, "µF-2"),
    174: Column("<Ewe>/V", _F4, "V"),
    178: Column("(Q-Qo)/C", _F4, "C"),
    179: Column("dQ/C", _F4, "C"),
    182: Column("step time/s", _F8, "s"),
    185: Column("<Ece>/V", _F4, "V"),
    211: Column("Q charge/discharge/mA.h", _F8, "mA.h"),
    212: Column("half cycle", _U4, ""),
    213: Column("z cycle", _U4, ""),
    217: Column("THD Ewe/%", _F4, "%"),
    218: Column("THD I/%", _F4, "%"),
    220: Column("NSD Ewe/%", _F4, "%"),
    221: Column("NSD I/%", _F4, "%"),
    223: Column("NSR Ewe/%", _F4, "%"),
    224: Column("NSR I/%", _F4, "%"),
    230: Column("|Ewe h2|/V", _F4, "V"),
    231: Column("|Ewe h3|/V", _F4, "V"),
    232: Column("|Ewe h4|/V", _F4, "V"),
    233: Column("|Ewe h5|/V", _F4, "V"),
    234: Column("|Ewe h6|/V", _F4, "V"),
    235: Column("|Ewe h7|/V", _F4, "V"),
    236: Column("|I h2|/A", _F4, "A"),
    237: Column("|I h3|/A", _F4, "A"),
    238: Column("|I h4|/A", _F4, "A"),
    239: Column("|I h5|/A", _F4, "A"),
    240: Column("|I h6|/A", _F4, "A"),
    241: Column("|I h7|/A", _F4, "A"),
    242: Column("|E2|/V", _F4, "V"),
    271: Column("Phase(Z1)/deg", _F4, "deg"),
    272: Column("Phase(Z2)/deg", _F4, "deg"),
    301: Column("|Z1|/Ohm", _F4, "Ohm"),
    302: Column("|Z2|/Ohm", _F4, "Ohm"),
    331: Column("Re(Z1)/Ohm", _F4, "Ohm"),
    332: Column("Re(Z2)/Ohm", _F4, "Ohm"),
    361: Column("-Im(Z1)/Ohm", _F4, "Ohm"),
    362: Column("-Im(Z2)/Ohm", _F4, "Ohm"),
    391: Column("<E1>/V", _F4, "V"),
    392: Column("<E2>/V", _F4, "V"),
    422: Column("Phase(Zstack)/deg", _F4, "deg"),
    423: Column("|Zstack|/Ohm", _F4, "Ohm"),
    424: Column("Re(Zstack)/Ohm", _F4, "Ohm"),
    425: Column("-Im(Zstack)/Ohm", _F4, "Ohm"),
    426: Column("<Estack>/V", _F4, "V"),
    430: Column("Phase(Zwe-ce)/deg", _F4, "deg"),
    431: Column("|Zwe-ce|/Ohm", _F4, "Ohm"),
    432: Column("Re(Zwe-ce)/Ohm", _F4, "Ohm"),
    433: Column("-Im(Zwe-ce)/Ohm", _F4, "Ohm"),
    434: Column("(Q-Qo)/C", _F4, "C"),
    435: Column("dQ/C", _F4, "C"),
    438: Column("step time/s", _F8, "s"),
    441: Column("<Ecv>/V", _F4, "V"),
    462: Column("Temperature/°C", _F4, "°C"),
    467: Column("Q charge/discharge/mA.h", _F8, "mA.h"),
    468: Column("half cycle", _U4, ""),
    469: Column("z cycle", _U4, ""),
    471: Column("<Ece>/V", _F4, "V"),
    473: Column("THD Ewe/%", _F4, "%"),
    474: Column("THD I/%", _F4, "%"),
    476: Column("NSD Ewe/%", _F4, "%"),
    477: Column("NSD I/%", _F4, "%"),
    479: Column("NSR Ewe/%", _F4, "%"),
    480: Column("NSR I/%", _F4, "%"),
    486: Column("|Ewe h2|/V", _F4, "V"),
    487: Column("|Ewe h3|/V", _F4, "V"),
    488: Column("|Ewe h4|/V", _F4, "V"),
    489: Column("|Ewe h5|/V", _F4, "V"),
    490: Column("|Ewe h6|/V", _F4, "V"),
    491: Column("|Ewe h7|/V", _F4, "V"),
    492: Column("|I h2|/A", _F4, "A"),
    493: Column("|I h3|/A", _F4, "A"),
    494: Column("|I h4|/A", _F4, "A"),
    495: Column("|I h5|/A", _F4, "A"),
    496: Column("|I h6|/A", _F4, "A"),
    497: Column("|I h7|/A", _F4, "A"),
    498: Column("Q charge/mA.h", _F8, "mA.h"),
    499: Column("Q discharge/mA.h", _F8, "mA.h"),
    500: Column("step time/s", _F8, "s"),
    501: Column("Efficiency/%", _F8, "%"),
    502: Column("Capacity/mA.h", _F8, "mA.h"),
    505: Column("Rdc/Ohm", _F4, "Ohm"),
    509: Column("Acir/Dcir Control", _U1, ""),
}

# Id 174 is <Ewe> on its own, but the phase of Z(we-ce) in a file that also has Ewe (6)
# or <Ewe> (77): the same id means two things, told apart by its neighbours.
ID_174_WITH_EWE = Column("Phase(Zwe-ce)/deg", _F4, "deg")

# The settings module's first byte names the technique of the first sequence.
TECHNIQUES: dict[int, str] = {
    0x04: "GCPL",
    0x06: "CV",
    0x0B: "OCV",
    0x16: "MP",
    0x18: "CA",
    0x19: "CP",
    0x1C: "WAIT",
    0x1D: "PEIS",
    0x1E: "GEIS",
    0x30: "CV",
    0x32: "ZIR",
    0x33: "CVA",
    0x6C: "LSV",
    0x75: "coV",
    0x76: "coC",
    0x77: "GCPL",
    0x7F: "MB",
    0x88: "BCD",
}
