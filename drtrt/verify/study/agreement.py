"""After go-live: how well the model agrees with the clinicians who read its visits, week by week.

The readers read every visit the model refers (or cannot grade, or asks a person to read) and a sample
of its negatives at the pathway's ``reads.sample_rate`` (:mod:`drtrt.clinic.read_queue`). Per ISO week
of the final read (:func:`weekly_agreement`), over the visits both the model and the read could grade
(referable or not; ungradable and "a human read" are left out):

- **kappa**: Cohen's kappa between the model's and the readers' referable-or-not
  (:func:`sklearn.metrics.cohen_kappa_score`), over the read visits as they are; None when it is not
  defined (fewer than two visits, or one answer only on both sides);
- **sensitivity**: of the referable visits (by the read), the share the model referred. The model's
  negatives are read only as a sample, so each sampled negative the reader found referable stands for
  ``1 / sample_rate`` negatives: sensitivity = TP / (TP + Σ FN / π), each missed referral weighted by
  the chance π that its visit was read (Horvitz–Thompson) — ``rate`` for a negative read because the
  sample drew it, 1 for a negative every visit of which is read: one of a validation study's period
  (``census``, the station's ``--study``), one that came after a read (``after_read``), or one read
  although the sample did not draw it. Weighting those by ``1 / rate`` too would count each of their
  misses many times over and raise false alerts once a study's weeks enter the table. None when no read
  visit is referable.

When the model has a validation record, a week whose sensitivity falls below the record's sensitivity
lower bound (its 95 % CI's) raises an **alert** (:attr:`Week.alert`): the station's dashboard shows it.
A week with too few referable reads to say (fewer than :data:`MIN_REFERABLE`) says so instead of
alerting or reassuring.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from drtrt.clinic.pathways import stored_pathway
from drtrt.clinic.read_queue import sampled
from drtrt.clinic.reads import after_read, reads_of, state_of
from drtrt.clinic.store import SessionStore
from drtrt.clinic.verdicts import REFER, REFER_URGENT, RESCREEN
from drtrt.clinic.visits import visit_days
from drtrt.validation_record import validation_of

MIN_REFERABLE = 5                              # referable reads a week needs before its sensitivity is judged


@dataclass(frozen=True)
class Week:
    week: str                                  # ISO week, 2026-W10
    n: int                                     # read visits both sides could grade
    referable: int                             # of them, referable by the read
    kappa: float | None
    sensitivity: float | None                  # on the sample (module docstring)
    lower_bound: float | None                  # the validation record's sensitivity lower bound (None: no record)

    @property
    def judged(self) -> bool:
        return self.lower_bound is not None and self.sensitivity is not None and self.referable >= MIN_REFERABLE

    @property
    def alert(self) -> bool:
        """Sensitivity on the sample is below the validation record's lower bound."""
        return self.judged and self.sensitivity < self.lower_bound


def _answer(verdict: str | None) -> int | None:
    return 1 if verdict in (REFER, REFER_URGENT) else 0 if verdict == RESCREEN else None


def weekly_agreement(store: SessionStore, census: tuple[str, str] | None = None) -> list[Week]:
    """Each ISO week with final reads, oldest first (module docstring); ``census``: a validation study's period
    (first and last day, ISO), whose every visit is read."""
    from sklearn.metrics import cohen_kappa_score

    meta = store.meta()
    pathway = stored_pathway(meta)
    record = validation_of(meta)
    bound = record.sensitivity.ci95_low if record is not None else None
    by_visit: dict[int, list] = {}
    for read in reads_of(store):
        by_visit.setdefault(read.visit, []).append(read)
    days = visit_days(store) if census else {}
    weeks: dict[str, list[tuple[int, int, float]]] = {}
    for visit, kept in by_visit.items():
        final = state_of(kept, pathway).final
        model, people = _answer(kept[0].model_verdict), _answer(final.verdict if final else None)
        if model is None or people is None:
            continue
        in_census = census is not None and census[0] <= days.get(visit, "") <= census[1]
        drawn = (not model and pathway.sample_rate > 0 and sampled(visit, pathway.sample_rate) and not in_census
                 and after_read(store, visit) is None)
        year, week, _ = dt.date.fromisoformat(final.recorded[:10]).isocalendar()
        weeks.setdefault(f"{year}-W{week:02d}", []).append((model, people, pathway.sample_rate if drawn else 1.0))
    found = []
    for week, pairs in sorted(weeks.items()):
        model, people = [m for m, _, _ in pairs], [p for _, p, _ in pairs]
        defined = len(pairs) >= 2 and (len(set(model)) > 1 or len(set(people)) > 1)
        kappa = float(cohen_kappa_score(model, people)) if defined else None
        kappa = None if kappa is None or math.isnan(kappa) else kappa
        tp = sum(1 for m, p, _ in pairs if m and p)
        fn = sum(1 for m, p, _ in pairs if not m and p)
        weighted_fn = sum(1 / chance for m, p, chance in pairs if not m and p)      # module docstring
        sensitivity = tp / (tp + weighted_fn) if tp + fn else None
        found.append(Week(week, len(pairs), tp + fn, kappa, sensitivity, bound))
    return found
