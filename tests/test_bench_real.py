"""bench/bench_real.py's lab views: a real recording logged coarser, or watched from a
restart part-way, judged with its onset and halt times still those of the whole file."""

from __future__ import annotations

from types import ModuleType

import pytest
from shared import load_bench

from cellguard.protocols.detectors.real import RealCase, load_real_corpus


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench("bench_real")


@pytest.fixture(scope="module")
def short(bench: ModuleType) -> RealCase:
    (case,) = [c for c in load_real_corpus(bench.DEFAULT_CORPUS) if c.name.startswith("jr862")]
    return case


def test_a_coarser_log_keeps_the_files_onset_and_counts_its_own_samples(
    bench: ModuleType, short: RealCase
) -> None:
    whole = bench.judge(short, bench.make_detector)
    view = bench.lab_view(short, 60.0, 0.0)
    assert view is not None
    assert view.file == f"{short.name} [every 60 s]"
    assert view.onset_s == short.onset_s
    assert view.verdict == "found"
    # one sample a minute, and each of the ~46 steps' first and last with a neighbour
    rec = short.recording
    assert rec is not None
    minutes = rec.duration_s / 60.0
    assert minutes <= view.samples <= minutes + 4 * 46
    assert whole.samples > 25 * view.samples
    # a minute apart, the delay is a few samples where the whole file counts hundreds
    assert view.delay_samples is not None
    assert 0 <= view.delay_samples <= view.delay_s / 60.0 + 2


def test_a_restart_is_judged_blind_with_times_of_the_whole_test(
    bench: ModuleType, short: RealCase
) -> None:
    assert short.onset_s is not None
    view = bench.lab_view(short, 0.0, 9.0)
    assert view is not None
    assert view.file == f"{short.name} [from 9 h]"
    assert view.onset_s == pytest.approx(short.onset_s - 9 * 3600.0, abs=1.0)
    assert view.verdict == "found"
    assert view.halt_s is not None
    assert view.delay_s is not None
    assert view.halt_s == pytest.approx(short.onset_s + view.delay_s, abs=1.0)
    # a restart after the onset has nothing left to find: no view
    assert bench.lab_view(short, 0.0, 24.0) is None


def test_injected_faults_stay_in_the_healthy_stretch_before_a_files_own_fault(
    bench: ModuleType, short: RealCase
) -> None:
    assert short.onset_s is not None
    faults = bench.injected_faults(short, 2)
    assert [f.kind for f in faults] == [k for k in bench.INJECTED_KINDS for _ in range(2)]
    for fault in faults:
        assert fault.onset_s >= bench._INJECT_FROM_S
        # the injected recording ends before the file's own soft short begins
        assert fault.recording.t_s[-1] - fault.recording.t_s[0] < short.onset_s
    outcomes = [bench.judge_injected(short, f) for f in faults]
    assert all(o.verdict == "found" for o in outcomes)
    assert all(o.after_onset_s is not None and o.after_onset_s >= 0 for o in outcomes)


def test_the_injected_summary_fails_on_a_miss_or_a_halt_before_the_onset(bench: ModuleType) -> None:
    def outcome(kind: str, verdict: str, delay: int | None) -> object:
        delay_s = None if delay is None else 10.0 * delay
        return bench.InjectedOutcome(
            "f", kind, 3600.0, 1, verdict, None, None, delay_s, delay, None
        )

    found = [outcome(k, "found", d) for k in bench.INJECTED_KINDS for d in (0, 1, 3)]
    rows = bench.injected_summary(found)
    assert rows["pass"]
    assert rows["short-soft"]["found"] == 3
    assert rows["short-soft"]["median_delay_samples"] == 1
    assert rows["short-soft"]["worst_delay_samples"] == 3
    assert rows["short-soft"]["worst_delay_s"] == 30.0
    assert not bench.injected_summary([*found, outcome("depletion", "missed", None)])["pass"]
    false = bench.injected_summary([*found, outcome("short-hard", "false halt", None)])
    assert not false["pass"]
    assert false["short-hard"]["false_halts"] == 1
    # a fault the labels cannot see within the recording is not counted against recall
    assert bench.injected_summary([*found, outcome("short-micro", "not observable", None)])["pass"]


def test_an_injected_fault_in_a_lab_view_keeps_its_onset_and_counts_the_views_samples(
    bench: ModuleType, short: RealCase
) -> None:
    hard = next(f for f in bench.injected_faults(short, 1) if f.kind == "short-hard")
    whole = bench.judge_injected(short, hard)
    minute = bench.judge_injected(short, hard, (60.0, None, 0.0))
    restart = bench.judge_injected(short, hard, (0.0, None, 2.0))
    assert minute.file == f"{short.name} [every 60 s]"
    assert restart.file == f"{short.name} [from 2 h before the onset]"
    for outcome in (whole, minute, restart):
        assert outcome.verdict == "found"
        assert outcome.onset_s == hard.onset_s
        assert outcome.after_onset_s is not None
        assert 0.0 <= outcome.after_onset_s <= 180.0
    # logged once a minute, the halt comes a sample or two after the label, not hundreds
    assert minute.delay_samples is not None
    assert 0 <= minute.delay_samples <= 3
    views = bench.run_injected_views([short], 1)
    assert list(views) == [
        "every 60 s", "every 120 s", "every 60 s or 5 mV", "from 2 h before the onset",
        "polled every 60 s, clock +0.0001",
    ]  # fmt: skip
    assert all(len(rows) == len(bench.INJECTED_KINDS) for rows in views.values())


def test_a_polled_view_is_judged_as_the_live_stream_with_the_files_onset(
    bench: ModuleType, short: RealCase
) -> None:
    view = bench.polled_view(short, 60.0, 1e-4)
    assert view.file == f"{short.name} [polled every 60 s, clock +0.0001]"
    assert view.onset_s == short.onset_s
    rec = short.recording
    assert rec is not None
    # one sample a poll, none of the steps' edges added (unlike a logged view)
    assert abs(view.samples - rec.duration_s / 60.0) <= 2
    assert view.verdict == "found"
    assert view.delay_s is not None
    assert 0.0 <= view.delay_s <= 1800.0


def test_a_fault_a_view_shows_on_one_sample_is_not_observable_in_it(bench: ModuleType) -> None:
    # PHJ's injected depletion from 652.45 h: once the electrode is empty each stripping
    # half cycle runs out in its last 36 s, and polled every 60 s (30 polls per 30-min
    # half cycle) no poll lands there; one poll, at the onset, shows it in 4 h.
    (phj,) = [
        c for c in load_real_corpus(bench.DEFAULT_CORPUS) if c.name.startswith("albanelli_fig3bc")
    ]
    (fault,) = [
        f
        for f in bench.injected_faults(phj)
        if f.kind == "depletion" and round(f.onset_s / 3600.0, 2) == 652.45
    ]
    assert bench.judge_injected(phj, fault).verdict == "found"
    polled = bench.judge_injected(phj, fault, polled=(60.0, 1e-4))
    assert polled.verdict == "not observable"
    assert bench.injected_summary([polled])["pass"]  # not counted as a miss
    logged = bench.judge_injected(phj, fault, (30.0, None, 0.0))
    assert logged.verdict == "found"
