"""The operator's language: gettext catalogs (Babel) for every string the station shows.

English is the source language; each other language is a ``locale/<code>/LC_MESSAGES/drtrt.po``
catalog compiled in memory at start (Babel's ``read_po`` + ``write_mo``), so the package ships
text files only. Strings the runtime writes in English — verdicts, the quality gate's advice —
are looked up in the same catalogs by their English text (:func:`runtime_messages` lists them,
and a test checks that every one is translated).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from babel.support import NullTranslations, Translations

from drtrt.messages import Message

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = {"en": "English", "es": "Español"}
DEFAULT = "en"


@functools.lru_cache(maxsize=None)
def translations(language: str) -> NullTranslations:
    """The catalog of ``language`` (an unknown code or English: the English text itself)."""
    if language == DEFAULT or language not in LANGUAGES:
        return NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with open(LOCALE_DIR / language / "LC_MESSAGES" / "drtrt.po", "rb") as handle:
        catalog = read_po(handle, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain="drtrt")


def pick(requested: str | None, accept_language: str | None) -> str:
    """The language to use: the operator's choice, else the browser's first known one, else English."""
    if requested in LANGUAGES:
        return requested
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT


def translate(t: NullTranslations, text: str | None) -> str | None:
    """``text`` in ``t``'s language: a :class:`~drtrt.messages.Message` by its template, its word values
    translated too; plain text by itself (English when the catalog does not have it: old records)."""
    if isinstance(text, Message):
        values = {k: t.gettext(v) if isinstance(v, str) and v else v for k, v in text.values.items()}
        try:
            return t.gettext(text.template) % values
        except (KeyError, ValueError, TypeError):       # a translation whose placeholders do not fit
            return str(text)
    return t.gettext(text) if text else text


def translator(language: str):
    """A function putting English text (or a :class:`~drtrt.messages.Message`) in ``language``: what
    :func:`drtrt.clinic.letters.letter_html` takes as ``tr``."""
    t = translations(language)
    return lambda text: translate(t, text) or ""


def catalog_template():
    """Every string to translate, as a Babel catalog: ``_()`` in the station's templates and code, an
    ``HTTPException``'s detail there, ``message()`` anywhere in the package, and :func:`runtime_messages`."""
    from babel.messages.catalog import Catalog
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir

    station = Path(__file__).parent
    methods = [("templates/**.html", "jinja2"), ("**.py", "python")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    catalog = Catalog(project="drtrt station", domain="drtrt")
    keywords = {**DEFAULT_KEYWORDS, "HTTPException": (2,)}       # an error page's detail is shown too
    for filename, lineno, message, comments, context in extract_from_dir(station, methods, options, keywords):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    package = station.parent
    for filename, lineno, message, comments, context in extract_from_dir(
            package, [("**.py", "python")], keywords={"message": None}, comment_tags=()):
        if isinstance(message, str):
            catalog.add(message, None, [(f"drtrt/{filename}", lineno)])
    for text in runtime_messages():
        catalog.add(text, None, [("drtrt/runtime", 0)])
    return catalog


def translated(string) -> bool:
    """A catalog message's msgstr is filled in (every plural form, for plural messages)."""
    return bool(string) if isinstance(string, str) or string is None else all(string)


def runtime_messages() -> list[str]:
    """English strings from the runtime the station shows as they are: verdicts and the quality advice."""
    from drtrt.clinic import verdicts as V
    from drtrt.clinic.failsafe import CLOSED_UNREAD, NEED_WORDS, OUTCOME_WORDS
    from drtrt.clinic.pathways import BUILT_IN
    from drtrt.preprocess.complete import REASONS as INCOMPLETE_REASONS
    from drtrt.runtime.quality import ADVICE
    from drtrt.task import TaskSpec
    from drtrt.validation_record import REASONS as VALIDATION_REASONS

    verdicts = [V.LABELS[v] for v in (*V.VERDICTS, V.NOT_PHOTOGRAPHED, V.SCREENING)]
    verdicts += [V.PROVISIONAL, V.NO_DR_SEEN, V.NO_REFERABLE_DR_SEEN]     # an unvalidated model's words
    words = [w for pathway in BUILT_IN.values() for w in pathway.all_words()]
    task = TaskSpec()
    names = [*task.grade_names, *task.lesion_long_names]
    failsafe = [*NEED_WORDS.values(), *OUTCOME_WORDS.values(), CLOSED_UNREAD]
    return list(dict.fromkeys([*verdicts, *words, *failsafe, *ADVICE.values(), *OPERATOR_ERRORS, *names, *VALUE_WORDS,
                               *VALIDATION_REASONS, *INCOMPLETE_REASONS]))


VALUE_WORDS = ("right", "left", "disc", "macula", *(f"{eye}/{field}" for eye in ("right", "left")
                                                   for field in ("any", "disc", "macula")))
"""Values that are words, translated where a message fills them in: eyes, fields, a slot's name."""


OPERATOR_ERRORS = (
    "a patient ID is needed",
    "a patient ID has at most 64 printable characters",
    "a name has at most 80 printable characters",
    "the date of birth must be a date (YYYY-MM-DD)",
    "the date of birth is not possible",
    "this photo is already in the visit",
    "this photo was already taken in another visit — check the patient",
    "this visit is closed",
    "this visit is closed: open a new visit for more photos",
    "every photo of this visit is taken: choose the photo to retake first",
    "choose a photo to upload",
    "the file is too large for a fundus photo",
    "this file is not a photo (JPEG, PNG, TIFF, BMP or DICOM)",
    "say why this photo is retaken",
    "say in a few words why this photo is retaken",
    "only a photo filling a slot can be moved",
    "the photo is already there",
    "wait for this photo's result before moving it",
    "this patient ID has no open visit: start their visit first",
    "choose the eye the photo shows",
    "this camera photo is no longer waiting",
    "the camera's file has changed: it is asked about again",
    "give the name of the person recording the outcome (at most 80 characters)",
    "the outcome must be one of letter_sent, appointment_booked, attended, treated, did_not_attend",
    "did not attend: say what then — rebook or discharge",
    "only did not attend takes rebook or discharge",
    "after did not attend: rebook or discharge",
    "a discharge needs its reason (at most 200 characters)",
    "this visit needs nothing now: there is no outcome to record",
    "a date is YYYY-MM-DD",
    "the last day is before the first",
    "the charts need matplotlib, which is not installed (pip install 'drtrt[report]'): the tables only",
)
"""What the operator may be told after an action, by the runtime's or the app's own (English) words."""
