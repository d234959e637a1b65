"""A study's figures, per patient: the confusion table (with the patients behind each cell), sensitivity,
specificity, PPV, NPV and imageability with their 95 % intervals, each against its endpoint.

Who counts where: **imageability** is over every study patient (imageable: the model gave a result).
**Sensitivity and specificity** are over the patients the reference standard could grade; a patient the
model could not grade counts as a positive when the protocol says ``ungradable: referred`` (the pathway
sends them to a person: not a miss, and a cost to specificity) and is left out of both when it says
``excluded`` (listed apart). A visit the readers found ungradable has no reference: listed, counted in
imageability only. Every study visit must have been read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from drtrt.errors import DataError
from drtrt.verify.study.cohort import ModelResult
from drtrt.verify.study.protocol import Plan, Protocol, interval

CELLS = ("true_positive", "false_positive", "false_negative", "true_negative")


@dataclass(frozen=True)
class Figure:
    """k of n, the estimate and its 95 % interval; endpoint: the lower bound it must reach (None: reported only)."""

    name: str
    k: int
    n: int
    value: float
    low: float
    high: float
    endpoint: float | None = None

    @property
    def passed(self) -> bool:
        return self.endpoint is None or (self.n > 0 and self.low >= self.endpoint)

    def line(self) -> str:
        if self.n == 0:
            return f"{self.name}: no patients in its denominator"
        against = "" if self.endpoint is None else (
            f" — {'clears' if self.passed else 'FAILS'} its endpoint {100 * self.endpoint:.1f}%")
        return (f"{self.name}: {self.k}/{self.n} = {100 * self.value:.1f}% (95% CI {100 * self.low:.1f}–"
                f"{100 * self.high:.1f}%){against}")


@dataclass
class StudyFigures:
    cells: dict[str, list[str]]                     # CELLS → patient ids
    excluded: dict[str, list[str]]                  # why → patient ids
    figures: dict[str, Figure]
    n_patients: int
    n_referable: int
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def figure(name: str, k: int, n: int, method: str, endpoint: float | None = None) -> Figure:
    if n == 0:
        return Figure(name, 0, 0, 0.0, 0.0, 0.0, endpoint)
    low, high = interval(k, n, method)
    return Figure(name, k, n, k / n, float(low), float(high), endpoint)


def analyse(results: Mapping[str, ModelResult], references: Mapping[tuple[str, str], object], protocol: Protocol,
            plan: Plan) -> StudyFigures:
    """The study's figures from the model's results (patient → :class:`ModelResult`) and the reference
    standard ((patient, date) → :class:`~drtrt.verify.study.reads.Reference`)."""
    unread = [p for p, r in results.items() if (p, r.date) not in references]
    if unread:
        raise DataError(f"every study visit must be read: {len(unread)} have no read ({', '.join(unread[:5])}"
                        f"{' …' if len(unread) > 5 else ''}); add their reads to the CSV")
    cells: dict[str, list[str]] = {c: [] for c in CELLS}
    excluded: dict[str, list[str]] = {"model_ungradable": [], "reference_ungradable": []}
    for patient, result in results.items():
        truth = references[(patient, result.date)].referable
        if truth is None:
            excluded["reference_ungradable"].append(patient)
            continue
        if result.outcome == "not_imageable" and protocol.ungradable == "excluded":
            excluded["model_ungradable"].append(patient)
            continue
        positive = result.outcome != "negative"          # a positive, or not imageable counted as referred
        cells[("true_" if positive == truth else "false_") + ("positive" if positive else "negative")].append(patient)
    tp, fp, fn, tn = (len(cells[c]) for c in CELLS)
    e, method = protocol.endpoints, protocol.ci_method
    imageable = sum(r.outcome != "not_imageable" for r in results.values())
    figures = {"sensitivity": figure("sensitivity", tp, tp + fn, method, e.sensitivity),
               "specificity": figure("specificity", tn, tn + fp, method, e.specificity),
               "imageability": figure("imageability", imageable, len(results), method, e.imageability),
               "ppv": figure("PPV", tp, tp + fp, method), "npv": figure("NPV", tn, tn + fn, method)}
    n_referable = sum(references[(p, r.date)].referable is True for p, r in results.items())
    failures = [f.line() for f in figures.values() if not f.passed]
    if len(results) < plan.min_patients:
        failures.append(f"n: {len(results)} patients, the power calculation asks for at least {plan.min_patients}")
    if n_referable < plan.min_referable:
        failures.append(f"n: {n_referable} patients with referable DR, the power calculation asks for at least "
                        f"{plan.min_referable}")
    return StudyFigures(cells, excluded, figures, len(results), n_referable, failures)
