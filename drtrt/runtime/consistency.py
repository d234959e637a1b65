"""Whether a graded photo's two heads — the DR grade and the lesion map — tell the same story.

The model grades and segments in one forward pass; nothing forces the two to agree, and an
untrained or out-of-distribution model shows it first there (a real photo with 31 % of the field
painted as soft exudate next to "no referable DR"). Such a result is not shown calmly: the record
warns and the eye's verdict asks for a human read (:mod:`drtrt.clinic.verdicts`).
"""

from __future__ import annotations

from drtrt.messages import message

# Lesion areas (% of the field of view) that contradict a grade. ICDR: grade 0 has no lesions and
# grade 1 microaneurysms only, so haemorrhages or exudates over a noise floor mean grade >= 2. The
# ceilings are about twice the largest area in the 54 IDRiD segmentation images (MA 0.59 %, SE 2.0 %,
# EX 10.8 %, HE 21.7 %): a map beyond them paints something that is not a lesion.
NOT_MA_FLOOR_PCT = 1.0
LESION_CEILING_PCT = {"MA": 2.0, "SE": 5.0, "EX": 25.0, "HE": 45.0}


def heads_disagree(record: dict) -> str | None:
    """Why a graded record's two heads contradict each other (None when they agree): a lesion type
    painted over more of the field than any real eye shows, or haemorrhages/exudates over
    :data:`NOT_MA_FLOOR_PCT` of the field next to a grade that says no referable DR."""
    lesions = record.get("lesions") or {}
    area = {code: float((finding or {}).get("area_fov_pct") or 0.0) for code, finding in lesions.items()}
    for code, ceiling in LESION_CEILING_PCT.items():
        if area.get(code, 0.0) > ceiling:
            return message("the lesion map paints %(pct).0f%% of the field as %(code)s, more than any real eye "
                           "shows — a human must read this photo", pct=area[code], code=code)
    grade = record.get("grade")
    not_ma = sum(area.get(code, 0.0) for code in ("HE", "EX", "SE"))
    if grade is not None and not record.get("referable") and not_ma >= NOT_MA_FLOOR_PCT:
        return message("the grade says no referable DR but the lesion map shows haemorrhages or exudates over "
                       "%(pct).1f%% of the field — a human must read this photo", pct=not_ma)
    return None
