"""Detectors: pure, deterministic judges of one channel, fed one sample at a time.

``make_detector(DetectorSettings(cell=...))`` gives the detector for a Li|Li cell
(``symmetric``/``asymmetric``: depletion voltage shifts and hard, soft and micro
shorts) or a ``full`` cell (voltage window, collapse, drops while charging).
"""

from cellguard.protocols.detectors._api import (
    OK,
    CellProfile,
    Detector,
    DetectorSettings,
    Severity,
    Verdict,
)
from cellguard.protocols.detectors._full import FullCellDetector
from cellguard.protocols.detectors._lithium import LithiumDetector
from cellguard.protocols.detectors._step_runs import StepRuns


def make_detector(settings: DetectorSettings) -> Detector:
    """The detector for the settings' cell profile."""
    if settings.cell == "full":
        return FullCellDetector(settings)
    return LithiumDetector(settings)


__all__ = [
    "OK",
    "CellProfile",
    "Detector",
    "DetectorSettings",
    "FullCellDetector",
    "LithiumDetector",
    "Severity",
    "StepRuns",
    "Verdict",
    "make_detector",
]
