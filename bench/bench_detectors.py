"""Recall, false halts and detection delay of cellguard's detectors on the labelled corpus.

Runs every case of :mod:`cellguard.protocols.detectors.corpus` (the tuning set and the
held-out set, reported separately) through ``make_detector(DetectorSettings(cell=...))``
with ``feed_batch``, and through the baseline measured in the same run: the fixed
limit the instrument's own protection applies (halt at |V| >= 4.99 V), which catches a
depletion only once the voltage leaves the range and a short never.

A fault case is *caught* when the first halt comes at or after the physical onset; a
halt on a non-fault case, or before the physical onset, is a *false halt*. Delay is
counted from the observable onset (``Case.onset_index``) in samples, seconds and
mAh cm⁻² passed. Goals: 100 % recall, 0 false halts, median delay <= 1 sample, worst
<= 3 samples; the PASS/FAIL line is for the held-out set, which nobody tunes on.
A sample of cases is also replayed through per-sample ``feed``: the verdicts must be
identical to ``feed_batch``'s.

Beside the classic corpus, the *reality* families
(:func:`~cellguard.protocols.detectors.corpus_reality.generate_reality`: one-direction
protocols, logging on change, impedance sweeps, fresh cells, pauses, full-cell
formation, µA garnet cells, real soft shorts) get their own per-family table, tuning and
held-out, with the same columns. A full cell is judged in the window its protocol sets
(``Case.v_min_v``/``v_max_v`` as ``full_v_min_v``/``full_v_max_v``); a detector whose
``feed_batch`` takes ``step_kind`` is given the cases' per-sample step kinds.

    .venv/bin/python bench/bench_detectors.py [--quick] [--json] [--seed N]
                                              [--corpus classic|reality|both]

Exit code 0 whatever the result: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# bench_real sits beside this file; imported by path so that the tests, which load
# this file by path too, find it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real

from cellguard.protocols.detectors._api import (
    OK,
    Detector,
    DetectorSettings,
    FloatArray,
    IntArray,
    Verdict,
)
from cellguard.protocols.detectors.corpus import (
    AREA_CM2,
    FAULT_FAMILIES,
    NON_FAULT_FAMILIES,
    Case,
    generate,
)
from cellguard.protocols.detectors.corpus_reality import (
    REALITY_FAULT_FAMILIES,
    REALITY_NON_FAULT_FAMILIES,
    generate_reality,
)

CLASSIC_FAMILIES = (*FAULT_FAMILIES, *NON_FAULT_FAMILIES)
REALITY_FAMILIES = (*REALITY_FAULT_FAMILIES, *REALITY_NON_FAULT_FAMILIES)

BASELINE_LIMIT_V = 4.99
GOAL_MEDIAN_DELAY = 1
GOAL_WORST_DELAY = 3


class FixedLimit:
    """The instrument's own protection: halt once |V| >= limit_v. Catches no short."""

    def __init__(self, settings: DetectorSettings, limit_v: float = BASELINE_LIMIT_V) -> None:
        self.settings = settings
        self._limit_v = limit_v
        self._n = 0
        self._halt: Verdict | None = None

    def _verdict(self, index: int, t_s: float, voltage_v: float) -> Verdict:
        return Verdict(
            "halt",
            kind="limit",
            index=index,
            t_s=t_s,
            criterion="|V| >= limit",
            measured=abs(voltage_v),
            threshold=self._limit_v,
            unit="V",
            detail=f"|V| = {abs(voltage_v):.3f} V reached the {self._limit_v} V limit",
        )

    def feed(
        self,
        t_s: float,
        voltage_v: float,
        current_a: float,
        step: int | None = None,
        cycle: int | None = None,
    ) -> Verdict:
        if self._halt is not None:
            return self._halt
        index = self._n
        self._n += 1
        if abs(voltage_v) >= self._limit_v:
            self._halt = self._verdict(index, t_s, voltage_v)
            return self._halt
        return OK

    def feed_batch(
        self,
        t_s: FloatArray,
        voltage_v: FloatArray,
        current_a: FloatArray,
        step: IntArray | None = None,
        cycle: IntArray | None = None,
    ) -> list[Verdict]:
        if self._halt is not None:
            return []
        hits = np.flatnonzero(np.abs(voltage_v) >= self._limit_v)
        if hits.size == 0:
            self._n += len(t_s)
            return []
        k = int(hits[0])
        self._halt = self._verdict(self._n + k, float(t_s[k]), float(voltage_v[k]))
        self._n += k + 1
        return [self._halt]

    @property
    def samples(self) -> int:
        return self._n

    @property
    def halt(self) -> Verdict | None:
        return self._halt


def _cellguard_factory() -> tuple[str, Callable[[DetectorSettings], Detector]]:
    try:
        from cellguard.protocols.detectors import make_detector  # noqa: PLC0415
    except ImportError:
        # Until the detectors exist the harness runs on a stand-in: the baseline itself.
        return "stand-in (fixed limit; make_detector not importable)", FixedLimit
    return "cellguard", make_detector


@dataclass
class Outcome:
    """One case through one detector."""

    case: str
    family: str
    fault: bool
    halt_index: int | None
    halt_kind: str
    halt_criterion: str
    warns: int
    caught: bool
    false_halt: bool
    delay_samples: int | None
    delay_s: float | None
    delay_mah_cm2: float | None
    seconds: float
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _charge_mah_cm2(case: Case) -> np.ndarray:
    dt_s = np.diff(case.t_s, prepend=0.0)
    cumulative: np.ndarray = np.cumsum(np.abs(case.current_a) * dt_s) / 3.6 / AREA_CM2
    return cumulative


def _kind(halt: Verdict | None) -> str:
    if halt is None:
        return ""
    return f"{halt.kind}/{halt.subkind}" if halt.subkind else halt.kind


def settings_for(case: Case) -> DetectorSettings:
    """The settings a channel running this case would get: its cell profile and, for a
    full cell, the voltage window its protocol sets."""
    if case.cell == "full" and case.v_min_v is not None and case.v_max_v is not None:
        return DetectorSettings(cell=case.cell, full_v_min_v=case.v_min_v,
                                full_v_max_v=case.v_max_v)  # fmt: skip
    return DetectorSettings(cell=case.cell)


def _takes_step_kind(method: Callable[..., Any]) -> bool:
    try:
        return "step_kind" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _extra(case: Case, method: Callable[..., Any]) -> dict[str, Any]:
    """``step_kind`` for detectors that take it (the corpus has it; the API may not yet)."""
    if case.step_kind is not None and _takes_step_kind(method):
        return {"step_kind": case.step_kind}
    return {}


def run_case(case: Case, detector: Detector) -> Outcome:
    t0 = time.perf_counter()
    verdicts = detector.feed_batch(
        case.t_s, case.voltage_v, case.current_a, case.step, case.cycle,
        **_extra(case, detector.feed_batch),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    halt = next((v for v in verdicts if v.is_halt), None)
    warns = sum(1 for v in verdicts if v.severity == "warn")
    h = halt.index if halt is not None else None
    caught = false_halt = False
    delay: int | None = None
    delay_s = delay_mah = None
    if case.fault is None:
        false_halt = h is not None
    elif h is not None:
        assert case.physical_onset_index is not None
        assert case.onset_index is not None
        if h < case.physical_onset_index:
            false_halt = True
        else:
            caught = True
            delay = h - case.onset_index
            delay_s = float(case.t_s[h] - case.t_s[case.onset_index])
            charge = _charge_mah_cm2(case)
            delay_mah = float(charge[h] - charge[case.onset_index])
    return Outcome(
        case=case.name,
        family=case.family,
        fault=case.fault is not None,
        halt_index=h,
        halt_kind=_kind(halt),
        halt_criterion=halt.criterion if halt is not None else "",
        warns=warns,
        caught=caught,
        false_halt=false_halt,
        delay_samples=delay,
        delay_s=delay_s,
        delay_mah_cm2=delay_mah,
        seconds=seconds,
        detail=halt.detail if halt is not None else "",
    )


def parity_mismatch(case: Case, make: Callable[[DetectorSettings], Detector]) -> str | None:
    """Replay ``case`` sample by sample; describe the first difference from feed_batch."""
    settings = settings_for(case)
    first = make(settings)
    batch = first.feed_batch(
        case.t_s, case.voltage_v, case.current_a, case.step, case.cycle,
        **_extra(case, first.feed_batch),
    )  # fmt: skip
    single = make(settings)
    streamed: list[Verdict] = []
    t, v, i = case.t_s.tolist(), case.voltage_v.tolist(), case.current_a.tolist()
    step, cycle = case.step.tolist(), case.cycle.tolist()
    kinds = None
    if case.step_kind is not None and _takes_step_kind(single.feed):
        kinds = case.step_kind.tolist()
    for k in range(len(t)):
        if kinds is None:
            verdict = single.feed(t[k], v[k], i[k], step[k], cycle[k])
        else:
            verdict = single.feed(  # type: ignore[call-arg]
                t[k], v[k], i[k], step[k], cycle[k], step_kind=kinds[k]
            )
        if verdict.severity != "ok":
            streamed.append(verdict)
            if verdict.is_halt:
                break
    a = [x.as_dict() for x in batch]
    b = [x.as_dict() for x in streamed]
    if a == b:
        return None
    for n, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"verdict {n}: feed_batch {x} != feed {y}"
    return f"feed_batch gave {len(a)} verdicts, feed {len(b)}"


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "worst": None}
    return {"median": float(statistics.median(values)), "worst": float(max(values))}


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    faults = [o for o in outcomes if o.fault]
    caught = [o for o in faults if o.caught]
    return {
        "cases": len(outcomes),
        "faults": len(faults),
        "caught": len(caught),
        "recall": len(caught) / len(faults) if faults else None,
        "false_halts": sum(o.false_halt for o in outcomes),
        "warned_non_faults": sum(1 for o in outcomes if not o.fault and o.warns),
        "delay_samples": _stats([o.delay_samples for o in caught if o.delay_samples is not None]),
        "delay_s": _stats([o.delay_s for o in caught if o.delay_s is not None]),
        "delay_mah_cm2": _stats([o.delay_mah_cm2 for o in caught if o.delay_mah_cm2 is not None]),
    }


def goals_met(summary: dict[str, Any]) -> dict[str, bool]:
    delay = summary["delay_samples"]
    return {
        "recall_100": summary["recall"] == 1.0,
        "no_false_halts": summary["false_halts"] == 0,
        "median_delay_le_1": delay["median"] is not None and delay["median"] <= GOAL_MEDIAN_DELAY,
        "worst_delay_le_3": delay["worst"] is not None and delay["worst"] <= GOAL_WORST_DELAY,
    }


@dataclass
class SetResult:
    name: str
    cases: list[Case]
    generate_s: float
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    parity: list[tuple[str, str | None]] = field(default_factory=list)


def run_set(
    name: str,
    cases: list[Case],
    generate_s: float,
    detectors: dict[str, Callable[[DetectorSettings], Detector]],
    parity_every: int,
) -> SetResult:
    result = SetResult(name, cases, generate_s)
    for label, make in detectors.items():
        t0 = time.perf_counter()
        result.outcomes[label] = [run_case(case, make(settings_for(case))) for case in cases]
        result.seconds[label] = time.perf_counter() - t0
    make = detectors["cellguard"]
    for n, case in enumerate(cases):
        if n % parity_every == 0:
            result.parity.append((case.name, parity_mismatch(case, make)))
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _row(label: str, s: dict[str, Any]) -> str:
    recall = "—" if s["recall"] is None else f"{s['caught']}/{s['faults']} {s['recall']:.0%}"
    d, ds, dq = s["delay_samples"], s["delay_s"], s["delay_mah_cm2"]
    return (
        f"  {label:<21} {s['cases']:>3}  {recall:>12}  {s['false_halts']:>5}  "
        f"{_fmt(d['median'], '.1f'):>6} {_fmt(d['worst'], '.0f'):>6}  "
        f"{_fmt(ds['median'], '.0f'):>7} {_fmt(ds['worst'], '.0f'):>7}  "
        f"{_fmt(dq['median'], '.4f'):>7} {_fmt(dq['worst'], '.4f'):>7}"
    )


def report(
    result: SetResult, labels: Sequence[str], order: Sequence[str] = CLASSIC_FAMILIES
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "generate_s": result.generate_s,
        "samples": int(sum(len(c.t_s) for c in result.cases)),
        "detectors": {},
    }
    samples = out["samples"]
    print(f"\n=== {result.name}: {len(result.cases)} cases, {samples} samples "
          f"(generated in {result.generate_s:.1f} s) ===")  # fmt: skip
    families = [f for f in order if any(c.family == f for c in result.cases)]
    for label in labels:
        outcomes = result.outcomes[label]
        seconds = result.seconds[label]
        print(f"\n-- {label}  ({seconds:.2f} s, {1e6 * seconds / samples:.2f} µs/sample)")
        print(
            f"  {'family':<21} {'n':>3}  {'recall':>12}  {'false':>5}  "
            f"{'delay samples':>13}  {'delay s':>15}  {'delay mAh cm⁻²':>15}"
        )
        print(f"  {'':<21} {'':>3}  {'':>12}  {'':>5}  {'median':>6} {'worst':>6}  "
              f"{'median':>7} {'worst':>7}  {'median':>7} {'worst':>7}")  # fmt: skip
        per_family = {}
        for family in families:
            s = summarize([o for o in outcomes if o.family == family])
            per_family[family] = s
            print(_row(family, s))
        overall = summarize(outcomes)
        print(_row("OVERALL", overall))
        goals = goals_met(overall)
        verdict = "PASS" if all(goals.values()) else "FAIL"
        print(f"  goals: {verdict}  " + ", ".join(f"{k}={v}" for k, v in goals.items()))
        problems = [
            o
            for o in outcomes
            if o.false_halt
            or (o.fault and not o.caught)
            or (o.delay_samples is not None and o.delay_samples > GOAL_WORST_DELAY)
        ]
        for o in problems[:25]:
            if o.false_halt:
                what = f"FALSE HALT at {o.halt_index} ({o.halt_kind}: {o.halt_criterion})"
            elif not o.caught:
                what = "MISSED"
            else:
                what = f"late by {o.delay_samples} samples ({o.halt_kind}: {o.halt_criterion})"
            print(f"    {o.case}: {what}")
        if len(problems) > 25:
            print(f"    ... and {len(problems) - 25} more")
        out["detectors"][label] = {
            "seconds": seconds,
            "per_family": per_family,
            "overall": overall,
            "goals": goals,
            "pass": verdict == "PASS",
            "cases": [o.as_dict() for o in outcomes],
        }
    mismatches = [(n, m) for n, m in result.parity if m is not None]
    print(f"\n  feed vs feed_batch: {len(result.parity)} cases replayed sample by sample, "
          f"{len(mismatches)} mismatch(es)")  # fmt: skip
    for n, m in mismatches[:10]:
        print(f"    {n}: {m}")
    out["parity"] = {"checked": len(result.parity), "mismatches": dict(mismatches)}
    return out


def delays(seed: int = 0, *, quick: bool = False) -> dict[str, Any]:
    """Recall, false halts and delay (samples) of cellguard's detectors, held-out set."""
    _, make = _cellguard_factory()
    cases = generate(seed, held_out=True, quick=quick)
    outcomes = [run_case(case, make(settings_for(case))) for case in cases]
    overall = summarize(outcomes)
    return {
        "detection_median_delay_samples": overall["delay_samples"]["median"],
        "detection_worst_delay_samples": overall["delay_samples"]["worst"],
        "detection_recall": overall["recall"],
        "detection_false_halts": overall["false_halts"],
        "detection_cases": overall["cases"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small subset of the corpus")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument(
        "--corpus", choices=("classic", "reality", "both", "real"), default="both",
        help="the classic corpus, the reality families, both (default; with the real "
        "recordings), or only the real recordings",
    )  # fmt: skip
    parser.add_argument(
        "--parity-every", type=int, default=0,
        help="replay every Nth case through per-sample feed (default: 1 quick, 5 full)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    parity_every = args.parity_every or (1 if args.quick else 5)

    started = time.perf_counter()
    name, make = _cellguard_factory()
    detectors: dict[str, Callable[[DetectorSettings], Detector]] = {
        "cellguard": make,
        "baseline (|V|>=4.99 V)": FixedLimit,
    }
    # --json: the tables go nowhere, only the JSON reaches stdout.
    sink = io.StringIO() if args.json else sys.stdout
    with contextlib.redirect_stdout(sink):
        print(f"detector: {name}; corpus seed {args.seed}{' (quick)' if args.quick else ''}")
        sets: dict[str, Any] = {}
        corpora = [
            (prefix, make_cases, order)
            for prefix, make_cases, order in (
                ("", generate, CLASSIC_FAMILIES),
                ("reality ", generate_reality, REALITY_FAMILIES),
            )
            if args.corpus in ("both", "reality" if prefix else "classic")
        ]
        real: dict[str, Any] | None = None
        if args.corpus in ("both", "real"):
            # Real recordings beside the simulated ones: the simulator is not the reference.
            real_result = bench_real.run(bench_real.DEFAULT_CORPUS)
            bench_real.print_table(real_result)
            bench_real.print_injected(real_result["injected"])
            bench_real.print_injected_views(real_result["injected views"])
            real = bench_real.as_json(real_result)
        for prefix, make_cases, order in corpora:
            for set_name, held_out in (("tuning", False), ("held-out", True)):
                t0 = time.perf_counter()
                cases = make_cases(args.seed, held_out=held_out, quick=args.quick)
                result = run_set(
                    prefix + set_name, cases, time.perf_counter() - t0, detectors, parity_every
                )
                sets[prefix + set_name] = report(result, list(detectors), order)
        runtime_s = time.perf_counter() - started
        passes: dict[str, bool] = {}
        for prefix, _, _ in corpora:
            tuning_pass = sets[prefix + "tuning"]["detectors"]["cellguard"]["pass"]
            held = sets[prefix + "held-out"]["detectors"]["cellguard"]["pass"]
            passes[prefix.strip() or "classic"] = held
            what = prefix.strip() or "classic"
            print(f"\n{what} tuning set: {'PASS' if tuning_pass else 'FAIL'} "
                  "(for information; tuned on)")  # fmt: skip
            print(
                f"GOALS ON {what.upper()} HELD-OUT SET ({name}): {'PASS' if held else 'FAIL'}  "
                f"[100 % recall, 0 false halts, median delay <= {GOAL_MEDIAN_DELAY} sample, "
                f"worst <= {GOAL_WORST_DELAY} samples]"
            )
        print(f"runtime {runtime_s:.1f} s")
    if args.json:
        payload = {
            "detector": name,
            "seed": args.seed,
            "quick": args.quick,
            "sets": sets,
            "held_out_pass": passes.get("classic"),
            "reality_held_out_pass": passes.get("reality"),
            "real": real,
            "runtime_s": runtime_s,
        }
        json.dump(payload, sys.stdout, indent=1, default=_json_default)
        print()
    return 0


def _json_default(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    msg = f"not JSON serializable: {type(value).__name__}"
    raise TypeError(msg)


if __name__ == "__main__":
    sys.exit(main())
