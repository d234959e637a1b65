"""The station's HTTP middleware: :class:`OperatorGuard` checks the login and the CSRF token before
any handler runs, :class:`SecurityHeaders` adds the security headers to every response.

Both are pure ASGI (like Starlette's own AuthenticationMiddleware), so the long poll and the photo
files stream through untouched. The guard sits in front of the handlers instead of inside each one,
so a new route is guarded unless its path is added to :data:`OPEN_PATHS`, the one list of what
needs no login.
"""

from __future__ import annotations

import html
import re
from http import HTTPStatus

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from drtrt.clinic.accounts import NO_LOGIN, SHARED_PIN, Actor, may
from drtrt.station import i18n
from drtrt.station.security import AccountGuard, PinGuard, csrf_ok, csrf_token

LOGIN_PATH = "/login"
OPEN_PATHS = (LOGIN_PATH, "/health", "/lang/", "/static/")
"""What needs no login (an entry ending in "/" covers every path below it): the PIN form itself, the
container's health check, the language switch, and the scripts, styles and icon the login page uses."""
NEEDS = ((re.compile(r"/visits/\d+/audit"), "audit"), (re.compile(r"/reads(/.*)?"), "read"),
         (re.compile(r"/study"), "study"))
"""Paths a role may be refused (:data:`drtrt.clinic.accounts.PERMISSIONS`); every other guarded path is "screen"."""
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")

_STATUS_CODES = {status.value for status in HTTPStatus}


def is_open(path: str) -> bool:
    """``path`` is in :data:`OPEN_PATHS`: it needs no login."""
    return any(path == entry or (entry.endswith("/") and path.startswith(entry)) for entry in OPEN_PATHS)


async def http_error_page(request: Request, exc: HTTPException) -> Response:
    """A redirect as it is; any other refusal as a bare page that says why, in the operator's language
    (no traceback, no path). The page stands alone — it may answer before any session or template."""
    if exc.status_code in (301, 302, 303, 307) and exc.headers:
        return Response(status_code=exc.status_code, headers=exc.headers)
    language = i18n.pick(request.cookies.get("lang"), request.headers.get("accept-language"))
    _ = i18n.translations(language).gettext
    titles = {400: _("This request cannot be used"), 403: _("Refused"), 404: _("Not found"),
              405: _("This action is not possible here"), 413: _("The file is too large")}
    title = titles.get(exc.status_code, _("Something went wrong"))
    detail = str(exc.detail or "")
    plain = detail == HTTPStatus(exc.status_code).phrase if exc.status_code in _STATUS_CODES else not detail
    why = "" if plain else f"<p>{html.escape(_(detail))}</p>"
    back = _("Back to today")
    page = (f'<!DOCTYPE html><html lang="{language}"><head><meta charset="utf-8"><title>{exc.status_code} · '
            f'{html.escape(title)}</title><link rel="stylesheet" href="/static/station.css"></head><body><main>'
            f'<section class="card narrow"><h1>{html.escape(title)}</h1>{why}<p><a href="/">'
            f'{html.escape(back)}</a></p></section></main></body></html>')
    return HTMLResponse(page, status_code=exc.status_code)


def _has_route(scope: Scope) -> bool:
    """A route will answer this request. An unknown path or a wrong method is left to the router's own
    404 / 405, so it reveals nothing about the login and gets no session cookie."""
    return any(route.matches(scope)[0] is Match.FULL for route in scope["app"].routes)


def needs(path: str) -> str:
    """What a person must be allowed (:func:`drtrt.clinic.accounts.may`) to reach ``path``."""
    return next((what for pattern, what in NEEDS if pattern.fullmatch(path)), "screen")


class OperatorGuard:
    """Login (with accounts, or when a PIN is set), the person's role, and CSRF (every POST) before any
    handler runs. The person is left in ``request.state.actor`` (an :class:`~drtrt.clinic.accounts.Actor`):
    with accounts, as the accounts file says now (a disabled account's session ends at its next
    request); with the shared PIN, "shared PIN"; with no login at all (loopback), "no login".

    The open paths other than the login page never touch the session: the health check, the language
    switch and static files get no cookie. Everything else first gets its session's CSRF token, so even
    a refused request leaves the browser the session its next form needs. A POST's form is read here,
    once its size is known to be acceptable, and left for the handler in ``request.state.form``.
    """

    def __init__(self, app: ASGIApp, pins: PinGuard | None, max_upload_bytes: int,
                 people: AccountGuard | None = None) -> None:
        self.app = app
        self.pins = pins
        self.people = people
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_route(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        path = request.url.path
        if is_open(path) and path != LOGIN_PATH:
            await self.app(scope, receive, send)
            return
        csrf_token(request.session)
        try:
            await self._check(request)
        except HTTPException as exc:
            response = await http_error_page(request, exc)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check(self, request: Request) -> None:
        """Raises what the request is refused with: the way to the login page, 413 or 403."""
        actor = self._actor(request)
        request.state.actor = actor
        if not is_open(request.url.path):
            if actor is None:
                raise HTTPException(303, headers=dict(Location=LOGIN_PATH))
            if not may(actor.role, needs(request.url.path)):
                raise HTTPException(403, "your role may not open this page")
        if request.method == "POST":
            request.state.form = await self._checked_form(request)

    def _actor(self, request: Request) -> Actor | None:
        """Who is logged in (None: nobody, and a login is needed)."""
        if self.people is not None:
            person = request.session.get("person")
            actor = self.people.accounts.active(person) if isinstance(person, str) else None
            if actor is None and person is not None:
                request.session.clear()                   # disabled or removed since: log in again
            return actor
        if self.pins is not None:
            return SHARED_PIN if request.session.get("operator") else None
        return NO_LOGIN

    async def _checked_form(self, request: Request) -> FormData:
        """The POST's form: refused unread when declared too large, refused without its session's token."""
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > self.max_upload_bytes + 2**16:
            raise HTTPException(413, "the file is too large for a fundus photo")
        form = await request.form(max_part_size=self.max_upload_bytes + 1)
        sent = form.get("csrf") or request.headers.get("x-csrf-token")
        if not csrf_ok(request.session, sent):
            raise HTTPException(403, "the form has expired — reload the page and try again")
        return form


class SecurityHeaders:
    """Security headers on every response (pure ASGI, so streaming and files pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(event: Message) -> None:
            if event["type"] == "http.response.start":
                headers = list(event.get("headers", []))
                if not any(name.lower() == b"content-security-policy" for name, _ in headers):   # a page's own
                    headers.append((b"content-security-policy", _CSP.encode()))
                headers += [(b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store")]
                event = {**event, "headers": headers}
            await send(event)

        await self.app(scope, receive, send_with_headers)
