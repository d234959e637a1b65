"""The referral letter at the station: its print view and its PDF, in the operator's language.

``/visits/N/letter`` is the letter itself (:func:`drtrt.clinic.letters.letter_html`) with a bar the
printer leaves out: back to the open actions, the PDF, and a form by which a named person says the
letter was sent — printing it records nothing. ``/visits/N/letter.pdf`` is the same letter through
headless Chromium (:mod:`drtrt.clinic.letter_pdf`); without one, a one-line answer saying so.

The letter keeps its own inline style (it is one self-contained file wherever it is saved), so its
response carries its own Content-Security-Policy allowing exactly that style by its hash, and
pictures only as data URIs; the middleware keeps a policy a handler set.
"""

from __future__ import annotations

import base64
import hashlib
import html

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from drtrt.clinic import letters
from drtrt.clinic.letter_pdf import html_to_pdf
from drtrt.clinic.referrals import Referral, find_referral
from drtrt.errors import ConfigError, DataError
from drtrt.messages import message
from drtrt.station import i18n
from drtrt.station.handlers import Page
from drtrt.station.state import actor_of
from drtrt.station.worklists import named

_STYLE_HASH = base64.b64encode(hashlib.sha256(letters.CSS.encode()).digest()).decode()
CSP = (f"default-src 'none'; img-src data:; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


def _referral(page: Page, visit_id: int) -> Referral:
    """The visit's referral; 404 for no such visit, 409 (in words) for one that is not a referral."""
    book = page.station.worker.book
    try:
        visit = book.visit(visit_id)
    except ConfigError:
        raise HTTPException(404, "no such visit") from None
    try:
        return find_referral(book.store, visit.patient.id, visit_id)
    except ConfigError as exc:
        raise HTTPException(409, str(exc)) from None


_WORDS = {"back": message("Back to open actions"), "pdf": message("Download PDF"), "name": message("Your name"),
          "sent": message("Record: letter sent"),
          "nothing": message("Printing records nothing: say here when the letter was sent.")}


def _toolbar(page: Page, referral: Referral) -> str:
    w = {key: html.escape(page._(text)) for key, text in _WORDS.items()}
    # a logged-in account is the person; with the shared PIN (or no login) the station asks their name
    name = "" if named(actor_of(page.request)) else \
        f'<label>{w["name"]} <input name="person" maxlength="80" required></label> '
    return (f'<nav class="toolbar"><a href="/actions#visit-{referral.visit}">{w["back"]}</a> · '
            f'<a href="/visits/{referral.visit}/letter.pdf" id="letter-pdf">{w["pdf"]}</a>'
            f'<form method="post" action="/actions/{referral.visit}/outcome" id="letter-sent">'
            f'<input type="hidden" name="csrf" value="{html.escape(page.csrf)}"><input type="hidden" name="outcome" '
            f'value="letter_sent">{name}'
            f'<button type="submit">{w["sent"]}</button></form><small>{w["nothing"]}</small></nav>')


def _letter(page: Page, referral: Referral, toolbar: str = "") -> str:
    store = page.station.worker.store
    return letters.letter_html(referral, store.meta(), page.station.worker.session.out, store.task(),
                               i18n.translator(page.language), page.language, toolbar)


async def letter(request: Request) -> Response:
    """The print view: one A4 letter."""
    page = Page(request)
    referral = _referral(page, request.path_params["visit_id"])
    return HTMLResponse(_letter(page, referral, _toolbar(page, referral)),
                        headers={"content-security-policy": CSP})


async def letter_pdf(request: Request) -> Response:
    """The same letter as a PDF download (503 in one line when no PDF renderer is here)."""
    page = Page(request)
    referral = _referral(page, request.path_params["visit_id"])
    try:
        data = await run_in_threadpool(html_to_pdf, _letter(page, referral))
    except DataError as exc:
        return Response(str(exc), status_code=503, media_type="text/plain; charset=utf-8")
    name = letters.letter_name(referral, ".pdf")
    return Response(data, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
