"""The detectors on real recordings: every labelled file of ``tests/fixtures/real-cells``.

Each file goes through ``make_detector`` with the settings a researcher would give
``cellguard replay`` (the cell type, the protocol's window of a full cell, the
instrument's range) and the step kinds the file carries, and through the baseline
measured in the same run: the instrument's own fixed limit (|V| >= 4.99 V).

A fault file is *found* when the first halt comes no earlier than one sample before the
onset labelled by looking at the trace; a halt on a healthy file, or earlier than that,
is a *false halt*. Delays are in seconds and samples after the labelled onset.
Goals: 100 % of the real shorts and depletions found, 0 false halts.

The Li/Na-metal pairs are also judged as a lab PC sees them (*lab views*): logged every
30, 60 and 120 s, or on every 1-10 mV change (every step change still recorded), and
watched from a (re)start 3-19 h into the test, joining the stream in the middle of a
half cycle with no history. They are also judged as the service's live stream sees
them (*polled views*): the newest sample at each poll, every 10-120 s of a PC clock
that runs up to 1e-3 off the instrument's, blind to the steps between polls (the
step's own time tells a new run of a step: ``StepRuns``). The same goals hold for
every view.

One real fault says little about recall, so the healthy stretches of the real Li|Li
files also carry *injected* faults (:mod:`cellguard.protocols.detectors.injected`): a
hard, soft or micro short or a depletion written into the real voltage from an onset
on, ``INJECTED_ONSETS`` onsets per kind and file spread over the test, and labelled by
the simulated corpus's rules with the real trace as the healthy twin. Delays count from
the observable onset (negative: halted before the label's threshold was crossed, after
the fault began). Goals: every injected fault found, no halt before its onset.

    .venv/bin/python bench/bench_real.py [--json] [--corpus DIR]

Exit code 0 whatever the result: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cellguard.protocols.detectors import Detector, DetectorSettings, Verdict, make_detector
from cellguard.protocols.detectors.injected import (
    CUT_AFTER_S,
    INJECTED_KINDS,
    Injected,
    inject,
    onset_times,
    view_onset_index,
)
from cellguard.protocols.detectors.real import (
    RealCase,
    load_real_corpus,
    logged_every,
    polled_every,
    settings_for,
    watched_from,
)

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "real-cells"
BASELINE_LIMIT_V = 4.99
# (logging interval s, or on a change of V, watched from h): 0 / None keep the file's
# own interval, its every sample, its start.
LAB_VIEWS = ((30.0, None, 0.0), (60.0, None, 0.0), (120.0, None, 0.0),
             (60.0, 0.001, 0.0), (300.0, 0.005, 0.0), (300.0, 0.01, 0.0),
             (0.0, None, 3.0), (0.0, None, 4.0), (0.0, None, 6.0), (0.0, None, 9.0),
             (0.0, None, 14.0), (0.0, None, 19.0), (10.0, 0.02, 2.0))  # fmt: skip
# Live polls (interval s, the PC clock's error against the instrument's): the first poll
# falls this share of an interval after the first sample, not at a step change.
POLLED_VIEWS = ((10.0, 0.0), (30.0, 1e-4), (60.0, 1e-4), (120.0, 1e-3))
_POLL_PHASE = 0.37
INJECTED_ONSETS = 8  # per kind and real Li|Li file
# The injected faults as a lab PC sees them (logging interval s or 0, on a change of V,
# a restart this many h before the onset): the logging labs use for week-long tests,
# and a service restarted shortly before a fault, which joins the stream blind.
INJECTED_VIEWS = ((60.0, None, 0.0), (120.0, None, 0.0), (60.0, 0.005, 0.0), (0.0, None, 2.0))
INJECTED_POLLED_VIEWS = ((60.0, 1e-4),)  # live polls, as POLLED_VIEWS
_INJECT_FROM_S = 3 * 3600.0  # the first onset: a few half cycles learnt
_INJECT_MARGIN_S = 1800.0  # a fault file's injected stretch ends this long before its own onset


class _FixedLimit:
    """The instrument's own protection: halt once |V| >= 4.99 V."""

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings

    def first_halt(self, case: RealCase) -> tuple[int, float] | None:
        rec = case.recording
        assert rec is not None
        hits = np.flatnonzero(np.abs(rec.voltage_v) >= BASELINE_LIMIT_V)
        return None if hits.size == 0 else (int(hits[0]), float(rec.t_s[hits[0]]))


@dataclass
class RealOutcome:
    """One real file through one detector."""

    file: str
    cell: str
    expect: str
    fault_kind: str | None
    onset_s: float | None
    samples: int
    hours: float
    verdict: str  # found / missed / false halt / early halt / quiet
    halt_s: float | None
    halt_index: int | None
    delay_s: float | None
    delay_samples: int | None
    warns: int
    detail: str


def judge(case: RealCase, make: Callable[[DetectorSettings], Detector]) -> RealOutcome:
    rec = case.recording
    assert rec is not None
    detector = make(settings_for(case))
    verdicts: list[Verdict] = detector.feed_batch(
        rec.t_s, rec.voltage_v, rec.current_a, rec.step, rec.cycle, rec.step_kind
    )
    halt = next((v for v in verdicts if v.severity == "halt"), None)
    warns = sum(v.severity == "warn" for v in verdicts)
    return _outcome(case, None if halt is None else (halt.index, halt.t_s), warns,
                    "" if halt is None else halt.detail)  # fmt: skip


def _outcome(
    case: RealCase, halt: tuple[int, float] | None, warns: int, detail: str
) -> RealOutcome:
    rec = case.recording
    assert rec is not None
    t0 = float(rec.t_s[0])
    onset_index = None
    if case.onset_s is not None:
        onset_index = int(np.searchsorted(rec.t_s - t0, case.onset_s))
    delay_s = delay_samples = None
    if halt is None:
        verdict = "missed" if case.expect == "fault" else "quiet"
    elif case.expect == "healthy":
        verdict = "false halt"
    else:
        assert onset_index is not None
        assert case.onset_s is not None
        delay_samples = halt[0] - onset_index
        delay_s = halt[1] - t0 - case.onset_s
        verdict = "found" if delay_samples >= -1 else "early halt"
    return RealOutcome(
        file=case.name,
        cell=case.cell,
        expect=case.expect,
        fault_kind=case.fault_kind,
        onset_s=case.onset_s,
        samples=len(rec),
        hours=rec.duration_s / 3600.0,
        verdict=verdict,
        halt_s=None if halt is None else halt[1] - t0,
        halt_index=None if halt is None else halt[0],
        delay_s=delay_s,
        delay_samples=delay_samples,
        warns=warns,
        detail=detail,
    )


def _joined(settings: DetectorSettings) -> Detector:
    """A detector for a stream joined part-way: it starts blind, as the service does."""
    return make_detector(dataclasses.replace(settings, stream_starts_at_reversal=False))


def _live(settings: DetectorSettings) -> Detector:
    """A detector for the service's live stream: polls, blind to the steps between them."""
    return make_detector(dataclasses.replace(settings, polled_live=True))


def _polled_name(interval_s: float, clock_error: float) -> str:
    """ "polled every 60 s, clock +0.0001" """
    return f"polled every {interval_s:g} s, clock {clock_error:+g}"


def _view_name(interval_s: float, change_v: float | None, start_h: float, restart: str = "") -> str:
    """ "every 60 s or 5 mV, from 3 h" (``restart``: "from 2 h before the onset")."""
    return ", ".join(
        part
        for part in (
            f"every {interval_s:g} s" if interval_s else "",
            f"or {change_v * 1e3:g} mV" if change_v is not None else "",
            f"from {start_h:g} h {restart}".rstrip() if start_h else "",
        )
        if part
    ).replace(", or", " or")


def lab_view(
    case: RealCase, interval_s: float, start_h: float, change_v: float | None = None
) -> RealOutcome | None:
    """``case`` logged every ``interval_s`` (or on a ``change_v`` change) and watched
    from ``start_h`` (None: the view starts after the labelled onset)."""
    rec = case.recording
    assert rec is not None
    view = logged_every(rec, interval_s, change_v) if interval_s else rec
    if start_h:
        view = watched_from(view, start_h * 3600.0)
    skipped_s = float(view.t_s[0] - rec.t_s[0])
    if case.onset_s is not None and skipped_s >= case.onset_s:
        return None
    onset_s = None if case.onset_s is None else case.onset_s - skipped_s
    seen = dataclasses.replace(case, recording=view, onset_s=onset_s)
    outcome = judge(seen, _joined if start_h else make_detector)
    outcome.file = f"{case.name} [{_view_name(interval_s, change_v, start_h)}]"
    if outcome.halt_s is not None:
        outcome.halt_s += skipped_s  # test time of the whole file
    return outcome


def polled_view(case: RealCase, interval_s: float, clock_error: float) -> RealOutcome:
    """``case`` as the live stream sees it: polled every ``interval_s`` on a PC clock
    ``clock_error`` off the instrument's (see :func:`polled_every`)."""
    rec = case.recording
    assert rec is not None
    view = polled_every(rec, interval_s, _POLL_PHASE * interval_s, clock_error)
    outcome = judge(dataclasses.replace(case, recording=view), _live)
    outcome.file = f"{case.name} [{_polled_name(interval_s, clock_error)}]"
    return outcome


@dataclass
class InjectedOutcome:
    """One fault injected into a real recording, through cellguard's detector."""

    file: str
    kind: str
    onset_s: float  # when the injected fault begins (test time)
    seed: int
    verdict: str  # found / missed / false halt / not observable
    criterion: str | None
    halt_s: float | None
    delay_s: float | None  # after the observable onset
    delay_samples: int | None
    after_onset_s: float | None  # after the fault began


def injected_faults(case: RealCase, count: int = INJECTED_ONSETS) -> list[Injected]:
    """``count`` faults of each kind written into ``case``'s healthy stretch: its whole
    test, or up to its own labelled onset."""
    rec = case.recording
    assert rec is not None
    end_s = rec.duration_s if case.onset_s is None else case.onset_s - _INJECT_MARGIN_S
    last_s = end_s - CUT_AFTER_S
    salt = sum(case.name.encode())
    out = []
    for k, kind in enumerate(INJECTED_KINDS):
        for n, onset_s in enumerate(onset_times(_INJECT_FROM_S, last_s, count, seed=salt + k)):
            out.append(inject(rec, kind, onset_s, seed=1000 * salt + 100 * k + n,
                              voltage_range_v=settings_for(case).voltage_range_v))  # fmt: skip
    return out


def judge_injected(
    case: RealCase,
    fault: Injected,
    view: tuple[float, float | None, float] | None = None,
    polled: tuple[float, float] | None = None,
) -> InjectedOutcome:
    """``fault`` through the detector, as recorded or in a lab ``view`` (logging
    interval s or 0, change V or None, a restart this many h before the onset or 0), or
    ``polled`` live (interval s, clock error)."""
    whole = fault.recording
    t0 = float(whole.t_s[0])
    rec, make, name = whole, make_detector, case.name
    if polled is not None:
        interval_s, clock_error = polled
        rec = polled_every(rec, interval_s, _POLL_PHASE * interval_s, clock_error)
        make = _live
        name = f"{case.name} [{_polled_name(interval_s, clock_error)}]"
    elif view is not None:
        interval_s, change_v, restart_h = view
        if interval_s:
            rec = logged_every(rec, interval_s, change_v)
        if restart_h:
            rec = watched_from(rec, max(0.0, fault.onset_s - restart_h * 3600.0))
            make = _joined
        name = f"{case.name} [{_view_name(interval_s, change_v, restart_h, 'before the onset')}]"
    verdicts = make(settings_for(case)).feed_batch(
        rec.t_s, rec.voltage_v, rec.current_a, rec.step, rec.cycle, rec.step_kind
    )
    halt = next((v for v in verdicts if v.severity == "halt"), None)
    outcome = InjectedOutcome(name, fault.kind, fault.onset_s, fault.seed, "missed",
                              None, None, None, None, None)  # fmt: skip
    # Observable by the labels' rules in the samples this view kept, too: a fault that
    # shows on one sample of a view is no more observable there than in a recording.
    twin = case.recording
    assert twin is not None  # (faults are written into recordings)
    if fault.onset_index is None or (
        rec is not whole and view_onset_index(fault, twin, rec) is None
    ):
        outcome.verdict = "not observable"
    if halt is None:
        return outcome
    outcome.criterion = halt.criterion
    outcome.halt_s = halt.t_s - t0
    outcome.after_onset_s = outcome.halt_s - fault.onset_s
    if halt.t_s < float(whole.t_s[fault.start_index]):
        outcome.verdict = "false halt"
    elif fault.onset_index is not None:
        # the label's sample, or the first this view kept after it
        label_s = float(whole.t_s[fault.onset_index])
        outcome.verdict = "found"
        outcome.delay_samples = (
            halt.index - int(np.searchsorted(rec.t_s, label_s)) if rec is not whole
            else halt.index - fault.onset_index
        )  # fmt: skip
        outcome.delay_s = halt.t_s - label_s
    return outcome


def run_injected_views(
    cases: Sequence[RealCase], count: int = INJECTED_ONSETS
) -> dict[str, list[InjectedOutcome]]:
    """The injected faults in each of ``INJECTED_VIEWS``."""
    faults = [
        (case, fault)
        for case in cases
        if case.cell != "full" and case.recording is not None
        for fault in injected_faults(case, count)
    ]
    views = {
        _view_name(*view, "before the onset"): [judge_injected(c, f, view) for c, f in faults]
        for view in INJECTED_VIEWS
    }
    for polled in INJECTED_POLLED_VIEWS:
        views[_polled_name(*polled)] = [judge_injected(c, f, polled=polled) for c, f in faults]
    return views


def run_injected(cases: Sequence[RealCase], count: int = INJECTED_ONSETS) -> list[InjectedOutcome]:
    return [
        judge_injected(case, fault)
        for case in cases
        if case.cell != "full" and case.recording is not None
        for fault in injected_faults(case, count)
    ]


def injected_summary(outcomes: Sequence[InjectedOutcome]) -> dict[str, Any]:
    """Per kind: how many, found, false halts, median and worst delay."""
    rows: dict[str, Any] = {}
    for kind in INJECTED_KINDS:
        mine = [o for o in outcomes if o.kind == kind]
        found = [o for o in mine if o.verdict == "found"]
        samples = sorted(o.delay_samples for o in found if o.delay_samples is not None)
        seconds = sorted(o.delay_s for o in found if o.delay_s is not None)
        rows[kind] = {
            "cases": len(mine),
            "observable": sum(o.verdict != "not observable" for o in mine),
            "found": len(found),
            "false_halts": sum(o.verdict == "false halt" for o in mine),
            "median_delay_samples": float(np.median(samples)) if samples else None,
            "worst_delay_samples": samples[-1] if samples else None,
            "median_delay_s": float(np.median(seconds)) if seconds else None,
            "worst_delay_s": seconds[-1] if seconds else None,
        }
    observable = sum(r["observable"] for r in rows.values())
    found = sum(r["found"] for r in rows.values())
    false = sum(r["false_halts"] for r in rows.values())
    rows["pass"] = found == observable and not false
    return rows


def run(corpus: Path) -> dict[str, Any]:
    cases = [c for c in load_real_corpus(corpus) if c.recording is not None]
    ours = [judge(case, make_detector) for case in cases]
    baseline = []
    for case in cases:
        first = _FixedLimit(settings_for(case)).first_halt(case)
        baseline.append(_outcome(case, first, 0, "fixed limit"))
    views = [
        view
        for case in cases
        if case.cell != "full"
        for interval_s, change_v, start_h in LAB_VIEWS
        if (view := lab_view(case, interval_s, start_h, change_v)) is not None
    ]
    views += [
        polled_view(case, interval_s, clock_error)
        for case in cases
        if case.cell != "full"
        for interval_s, clock_error in POLLED_VIEWS
    ]
    return {
        "cellguard": ours,
        "baseline": baseline,
        "lab views": views,
        "injected": run_injected(cases),
        "injected views": run_injected_views(cases),
    }


def summary(outcomes: Sequence[RealOutcome]) -> dict[str, Any]:
    faults = [o for o in outcomes if o.expect == "fault"]
    found = [o for o in faults if o.verdict == "found"]
    false = [o for o in outcomes if o.verdict in ("false halt", "early halt")]
    return {
        "files": len(outcomes),
        "faults": len(faults),
        "found": len(found),
        "false_halts": len(false),
        "worst_delay_s": max((o.delay_s or 0.0 for o in found), default=None),
        "pass": len(found) == len(faults) and not false,
    }


def print_table(result: dict[str, Any]) -> None:
    ours: list[RealOutcome] = result["cellguard"]
    base: list[RealOutcome] = result["baseline"]
    print("\nreal recordings (tests/fixtures/real-cells): cellguard vs the fixed ±4.99 V limit")
    head = f"{'file':44} {'cell':10} {'label':22} {'cellguard':34} {'fixed limit':14}"
    print(head)
    print("-" * len(head))
    for o, b in zip(ours, base, strict=True):
        label = o.expect if o.expect == "healthy" else f"{o.fault_kind} @ {o.onset_s:.0f} s"
        mine = o.verdict
        if o.delay_s is not None:
            mine += f" +{o.delay_s:.0f} s / {o.delay_samples} smp"
        elif o.halt_s is not None:
            mine += f" at {o.halt_s / 3600:.2f} h"
        mine += f", {o.warns} warn" if o.warns else ""
        print(f"{o.file[:44]:44} {o.cell:10} {label[:22]:22} {mine[:34]:34} {b.verdict:14}")
    s, sb = summary(ours), summary(base)
    print(
        f"cellguard: {s['found']}/{s['faults']} faults found, {s['false_halts']} false halts "
        f"on {s['files']} files; fixed limit: {sb['found']}/{sb['faults']} found, "
        f"{sb['false_halts']} false halts"
    )
    print(f"GOALS ON REAL RECORDINGS: {'PASS' if s['pass'] else 'FAIL'}  "
          "[100 % of real faults found, 0 false halts]")  # fmt: skip
    for o in ours:
        if o.verdict in ("missed", "false halt", "early halt"):
            print(f"  {o.verdict}: {o.file}: {o.detail or 'no halt'}")
    views: list[RealOutcome] = result.get("lab views", [])
    if views:
        print("\nthe Li/Na-metal pairs as a lab PC sees them (logged every N s, or on an N mV "
              "change; watched from a restart N h in; polled live every N s)")  # fmt: skip
        for o in views:
            mine = o.verdict
            if o.delay_s is not None:
                mine += f" +{o.delay_s:.0f} s / {o.delay_samples} smp"
            elif o.halt_s is not None:
                mine += f" at {o.halt_s / 3600:.2f} h"
            name, _, view = o.file.partition(" [")
            print(f"  {name[:44]:44} {'[' + view:36} {mine}")
        v = summary(views)
        print(f"lab views: {v['found']}/{v['faults']} faults found, {v['false_halts']} false "
              f"halts in {v['files']} views: {'PASS' if v['pass'] else 'FAIL'}")  # fmt: skip
        for o in views:
            if o.verdict in ("missed", "false halt", "early halt"):
                print(f"  {o.verdict}: {o.file}: {o.detail or 'no halt'}")


def print_injected(outcomes: Sequence[InjectedOutcome]) -> None:
    files = sorted({o.file for o in outcomes})
    print(f"\nfaults injected into the healthy stretches of {len(files)} real Li|Li files "
          f"({INJECTED_ONSETS} onsets per kind and file; delays after the observable "
          "onset)")  # fmt: skip
    head = (f"{'fault':12} {'found':>9} {'false halts':>11} {'median smp':>10} {'worst smp':>9} "
            f"{'median s':>9} {'worst s':>8}")  # fmt: skip
    print(head)
    print("-" * len(head))
    rows = injected_summary(outcomes)

    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    for kind in INJECTED_KINDS:
        r = rows[kind]
        found = f"{r['found']}/{r['observable']}"
        median_smp = num(r["median_delay_samples"], "g")
        worst_smp = num(r["worst_delay_samples"], "d")
        median_s = num(r["median_delay_s"], ".0f")
        worst_s = num(r["worst_delay_s"], ".0f")
        print(f"{kind:12} {found:>9} {r['false_halts']:>11} {median_smp:>10} {worst_smp:>9} "
              f"{median_s:>9} {worst_s:>8}")  # fmt: skip
    print(
        f"injected faults: {'PASS' if rows['pass'] else 'FAIL'}  "
        "[every observable injected fault found, none halted before its onset]"
    )
    for o in outcomes:
        if o.verdict in ("missed", "false halt"):
            print(f"  {o.verdict}: {o.file} {o.kind} from {o.onset_s / 3600:.2f} h (seed {o.seed})")


def print_injected_views(views: dict[str, list[InjectedOutcome]]) -> None:
    print("\nthe injected faults as a lab PC sees them: found / faults, and the worst time "
          "from the fault's start to the halt")  # fmt: skip
    print(f"{'view':34} " + " ".join(f"{kind:>18}" for kind in INJECTED_KINDS))
    for name, outcomes in views.items():
        cells = []
        for kind in INJECTED_KINDS:
            mine = [o for o in outcomes if o.kind == kind and o.verdict != "not observable"]
            found = [o for o in mine if o.verdict == "found"]
            worst = max((o.after_onset_s or 0.0 for o in found), default=0.0)
            cells.append(f"{len(found)}/{len(mine)}, {worst / 60:.0f} min")
        print(f"{name:34} " + " ".join(f"{c:>18}" for c in cells))
    every = [o for outcomes in views.values() for o in outcomes]
    print(f"injected faults in lab views: {'PASS' if injected_summary(every)['pass'] else 'FAIL'}")
    for o in every:
        if o.verdict in ("missed", "false halt", "not observable"):
            print(f"  {o.verdict}: {o.file} {o.kind} from {o.onset_s / 3600:.2f} h (seed {o.seed})")


def as_json(result: dict[str, Any]) -> dict[str, Any]:
    def clean(o: RealOutcome) -> dict[str, Any]:
        row = asdict(o)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}

    out: dict[str, Any] = {
        name: {"summary": summary(rows), "files": [clean(o) for o in rows]}
        for name, rows in result.items()
        if not name.startswith("injected")
    }
    injected = result.get("injected")
    if injected is not None:
        out["injected"] = {
            "summary": injected_summary(injected),
            "faults": [asdict(o) for o in injected],
        }
    views = result.get("injected views")
    if views is not None:
        out["injected views"] = {
            name: {"summary": injected_summary(rows), "faults": [asdict(o) for o in rows]}
            for name, rows in views.items()
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus folder")
    args = parser.parse_args(argv)
    result = run(args.corpus)
    if args.json:
        json.dump(as_json(result), sys.stdout, indent=1)
        print()
    else:
        print_table(result)
        print_injected(result["injected"])
        print_injected_views(result["injected views"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
