"""Words built with values, kept translatable: a :class:`Message` is the English text *and* the
template with named placeholders it was made from.

A warning such as "the lesion map paints 31% of the field as SE …" cannot be looked up in a
translation catalogue by its English text, since the numbers change. The runtime and the clinic make
such text with :func:`message`: the result is a ``str`` (the English text, so the CLI, the CSV, DICOM
and FHIR use it as before) that also carries ``template`` and ``values``. The station translates the
template and fills the values in (a value that is a word — an eye, a field — is translated too).

A record keeps its warnings twice (:func:`to_record` / :func:`from_record`): ``warnings`` as English
text, for every reader as before, and ``warning_messages`` as ``{"text": template, "values": {...}}``.
A record written before this has plain text only: it still reads, in English.
"""

from __future__ import annotations

from typing import Any


class Message(str):
    """English text that knows its template (``%(name)s`` placeholders) and values."""

    template: str
    values: dict[str, Any]

    def __new__(cls, template: str, values: dict[str, Any] | None = None) -> Message:
        values = dict(values or {})
        text = super().__new__(cls, template % values)
        text.template, text.values = template, values
        return text

    def to_dict(self) -> dict:
        return {"text": self.template, "values": dict(self.values)}

    def __reduce__(self):                      # copy and pickle keep the template
        return Message, (self.template, self.values)


def message(template: str, **values: Any) -> Message:
    """``template % values`` as a :class:`Message` (the template is what translators see)."""
    return Message(template, values)


def _kept(data: Any, text: str) -> str:
    """A stored ``{"text", "values"}`` as a :class:`Message`; ``text`` when it cannot be one."""
    try:
        return Message(data["text"], data.get("values") or {})
    except (KeyError, ValueError, TypeError, AttributeError):   # not a template its values fill
        return str(text)


def to_record(warnings: list[str]) -> dict:
    """The record's keys for ``warnings``: the English text, and the templates of those that have one."""
    out: dict = {"warnings": [str(w) for w in warnings]}
    if any(isinstance(w, Message) for w in warnings):
        out["warning_messages"] = [w.to_dict() if isinstance(w, Message) else {"text": str(w), "values": {}}
                                   for w in warnings]
    return out


def from_record(record: dict) -> list[str]:
    """A record's warnings, as Messages where it kept their templates (older records: plain text)."""
    texts = list(record.get("warnings") or [])
    kept = record.get("warning_messages")
    if isinstance(kept, list) and len(kept) == len(texts):
        return [_kept(m, t) for m, t in zip(kept, texts)]
    return [str(t) for t in texts]
