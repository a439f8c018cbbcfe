"""Make the README's example figures: `docs/plot-example.png` and `docs/fig2-grid.png`.

The demo runs the paper's 8 cells (4 interphases × symmetric and asymmetric 100|20 µm)
through the daemon and exports each cell's recorded samples; the 50 µm column of the
Fig. 2 grid is simulated here with the same cell physics (0.5 mA cm⁻², 1 h half cycles,
60 s recording, clipped at the instrument's ±5 V and cut 10 min after it is reached, as
the instrument's protection would), since the demo has only 8 channels.

    .venv/bin/python docs/make_figures.py [--hours 600] [--out docs]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from cellguard.daemon.export import bdf_frame, write_bdf
from cellguard.daemon.plots import cell_file_name
from cellguard.drivers.sim import SimCell, SimCellSpec, simulate_square_wave

AREA_CM2 = 0.785
CURRENT_A = 0.5e-3 * AREA_CM2
RANGE_V = 5.0
RECORD_S = 60.0


def simulate_50um(interphase: str, hours: float, seed: int, folder: Path) -> Path:
    """One asymmetric 100|50 µm cell, recorded like the demo's, as a BDF CSV."""
    cell = SimCell(SimCellSpec(interphase=interphase, li_working_um=50.0), seed)
    t, i, v = [], [], []
    cut_s = None
    for t_s, current_a, voltage_v in simulate_square_wave(
        cell, CURRENT_A, 3600.0, hours * 3600.0, RECORD_S
    ):
        clipped = max(-RANGE_V, min(RANGE_V, voltage_v))
        t.append(t_s)
        i.append(current_a)
        v.append(clipped)
        if cut_s is None and abs(clipped) >= RANGE_V:
            cut_s = t_s + 600.0
        if cut_s is not None and t_s >= cut_s:
            break
    t_s_arr = np.asarray(t, dtype=np.float64)
    path = folder / cell_file_name(interphase, "asymmetric", 50.0)
    write_bdf(
        bdf_frame(
            t_s_arr, np.asarray(v), np.asarray(i), cycle=(t_s_arr // 7200).astype(np.int64) + 1
        ),
        path,
        "bdf-csv",
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "cellguard.daemon.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        subprocess.run(
            [*cli, "demo", "--hours", str(args.hours), "--export-dir", str(runs)], check=True
        )
        for k, interphase in enumerate(("MII-1", "MII-2", "MII-3", "SEI")):
            simulate_50um(interphase, args.hours, seed=50 + k, folder=runs)
        subprocess.run(
            [*cli, "plot", "--grid", str(runs), "-o", str(args.out / "fig2-grid.png")],
            check=True,
        )
        example = runs / cell_file_name("MII-1", "asymmetric", 20.0)
        subprocess.run(
            [*cli, "plot", str(example), "--cell", "asymmetric", "--thin-li-um", "20", "-o",
             str(args.out / "plot-example.png")],
            check=True,
        )  # fmt: skip


if __name__ == "__main__":
    main()
