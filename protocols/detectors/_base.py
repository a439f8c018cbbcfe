"""What every detector shares: counting samples, the halt latch, rate-limited warns."""

from __future__ import annotations

import itertools
import math

from cellguard.protocols.detectors._api import OK, DetectorSettings, Verdict

# A warn of the same kind and criterion is repeated at most once an hour: a warn is
# for a person, and a person does not need the same suspicion every second.
WARN_REPEAT_S = 3600.0


def _magnitude(value: float) -> float:
    # NaN stays the shared math.nan object, so equal verdicts compare equal.
    return math.nan if math.isnan(value) else abs(value)


class DetectorBase:
    """Bookkeeping for a streaming detector; subclasses judge the samples."""

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        self._n = 0
        self._halt: Verdict | None = None
        self._last_warn: dict[str, float] = {}

    @property
    def samples(self) -> int:
        return self._n

    @property
    def halt(self) -> Verdict | None:
        return self._halt

    def feed(
        self,
        t_s: float,
        voltage_v: float,
        current_a: float,
        step: int | None = None,
        cycle: int | None = None,
        kind: int | None = None,
        *,
        step_time_s: float = math.nan,
    ) -> Verdict:
        raise NotImplementedError  # pragma: no cover

    def _feed_each(
        self,
        t_s: list[float],
        voltage_v: list[float],
        current_a: list[float],
        step: list[int] | None = None,
        kind: list[int] | None = None,
    ) -> list[Verdict]:
        """Feed samples one by one; after a halt the rest is only counted."""
        out: list[Verdict] = []
        feed = self.feed
        total = len(t_s)
        steps = itertools.repeat(None) if step is None else step
        kinds = itertools.repeat(None) if kind is None else kind
        for k, (t, v, i, n, c) in enumerate(
            zip(t_s, voltage_v, current_a, steps, kinds, strict=False)
        ):
            verdict = feed(t, v, i, n, None, c)
            if verdict is not OK:
                out.append(verdict)
                if verdict.severity == "halt":
                    self._n += total - k - 1
                    break
        return out

    def _halt_with(
        self,
        index: int,
        t_s: float,
        kind: str,
        criterion: str,
        measured_v: float,
        baseline_v: float,
        threshold_v: float,
        detail: str,
        *,
        subkind: str = "",
    ) -> Verdict:
        """Halt (latched: nothing more is judged after it)."""
        return self._emit(
            "halt",
            index,
            t_s,
            kind,
            subkind,
            criterion,
            measured_v,
            baseline_v,
            threshold_v,
            detail,
        )

    def _warn(
        self,
        index: int,
        t_s: float,
        kind: str,
        criterion: str,
        measured_v: float,
        baseline_v: float,
        threshold_v: float,
        detail: str,
        *,
        subkind: str = "",
    ) -> Verdict:
        """Warn (at most once an hour per kind and criterion)."""
        return self._emit(
            "warn",
            index,
            t_s,
            kind,
            subkind,
            criterion,
            measured_v,
            baseline_v,
            threshold_v,
            detail,
        )

    def _emit(
        self,
        severity: str,
        index: int,
        t_s: float,
        kind: str,
        subkind: str,
        criterion: str,
        measured_v: float,
        baseline_v: float,
        threshold_v: float,
        detail: str,
    ) -> Verdict:
        """A halt (latched: nothing is judged after it) or a rate-limited warn."""
        if severity == "warn":
            key = f"{kind}/{criterion}"
            last = self._last_warn.get(key)
            if last is not None and t_s - last < WARN_REPEAT_S:
                return OK
            self._last_warn[key] = t_s
            text = f"suspected {kind}: {detail}"
        else:
            text = f"{kind}{f' ({subkind})' if subkind else ''}: {detail}"
        verdict = Verdict(
            "halt" if severity == "halt" else "warn",
            kind=kind,
            subkind=subkind,
            index=index,
            t_s=t_s,
            criterion=criterion,
            measured=_magnitude(measured_v),
            baseline=_magnitude(baseline_v),
            threshold=threshold_v,
            unit="V",
            detail=text,
        )
        if severity == "halt":
            self._halt = verdict
        return verdict
