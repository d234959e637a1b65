"""The reading centre's pages in the browser, served by ``drtrt centre serve SESSION`` over a centre's session
folder (made by ``drtrt centre pull``): the queue by urgency, the read page, second reads and arbitration
(:mod:`.centre_pages`, over :mod:`drtrt.integration.centre_reads`).

The station's own parts, not a second copy: the login page and logout (:mod:`.people`), the accounts
(:class:`~drtrt.clinic.accounts.Accounts`, kept in the session folder: ``drtrt accounts add NAME --role reader
--data-dir SESSION``), the login, role and CSRF checks and the security headers (:mod:`.middleware`), the base
layout, styles and zoom script. A centre always has accounts: its reads go out VERIFIED with the reader as the
Verifying Observer, so each must name the clinician who answers for it — a session without accounts is refused
in one line. Every page but the login is under ``/reads`` (the "read" permission: a screener's account is
refused them).

The centre's session store is held while the pages are served (logins and reads are audited there):
``drtrt centre list``, ``centre read`` and ``centre push`` wait until the pages stop (one line says so); ``centre
pull`` works beside them. Given the PACS (``--dicomweb``, and ``--fhir``), the server itself sends each final read
and fetches new studies (:mod:`.centre_link`: a loop, and two buttons on the queue page), with the store it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from drtrt.clinic.accounts import Accounts
from drtrt.clinic.pathways import keep_pathway, load_pathway
from drtrt.clinic.store import SessionStore
from drtrt.errors import ConfigError
from drtrt.integration.centre_reads import centre_session
from drtrt.station import centre_pages, handlers, people
from drtrt.station.middleware import LOGIN_PATH, OperatorGuard, SecurityHeaders, http_error_page
from drtrt.station.security import MAX_UPLOAD_BYTES, AccountGuard, session_secret
from drtrt.station.state import Templates

if TYPE_CHECKING:
    from drtrt.station.centre_link import CentreLink

HERE = Path(__file__).parent


async def _home(request):
    return RedirectResponse("/reads", status_code=303)


ROUTES = [
    Route("/", _home), Route("/reads", centre_pages.queue_page),
    Route("/reads/fetch", centre_pages.fetch_now, methods=["POST"]),
    Route("/reads/send", centre_pages.send_now, methods=["POST"]),
    Route("/reads/{study:str}", centre_pages.read_page),
    Route("/reads/{study:str}/read", centre_pages.read_submit, methods=["POST"]),
    Route("/reads/{study:str}/picture/{name:str}", centre_pages.picture),
    Route(LOGIN_PATH, people.login, methods=["GET", "POST"]), Route("/logout", people.logout, methods=["POST"]),
    Route("/lang/{code:str}", handlers.set_language), Route("/health", handlers.health),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]


class CentreTemplates(Templates):
    """The station's templates, told they are a reading centre's (the base layout's nav, no station banner)."""

    def __call__(self, language: str):
        env = super().__call__(language)
        env.globals["centre"] = True
        return env


@dataclass
class Desk:
    """What the station's shared pages (login, health, the base layout) reach as ``station.worker``."""

    store: SessionStore
    version: int = 0
    failed: str | None = None
    pending: int = 0


@dataclass(frozen=True)
class Centre:
    """One served reading centre, as its handlers see it (``request.app.state.station``)."""

    session: Path
    organisation: str
    worker: Desk
    people: AccountGuard
    templates: Templates
    pins: None = None
    forwarder: None = None
    link: CentreLink | None = None                  # the PACS the pages fetch from and send to (None: not given)


def create_centre_app(session: str | Path, organisation: str | None = None, pathway: str | None = None,
                      max_upload_bytes: int = MAX_UPLOAD_BYTES, link: dict | None = None) -> Starlette:
    """The centre's ASGI app over ``session``; it holds the session's store (``app.state.station.worker.store``:
    close it when done). ``pathway`` (icdr, nhs, a YAML file) and ``organisation`` are kept in the session.
    ``link``: :class:`~.centre_link.CentreLink`'s arguments (``dicomweb``, ``fhir``, ``every_s``, ``timeout``,
    ``since``), the PACS the pages fetch from and send to (its loop is not started here: :func:`serve_centre`)."""
    session = centre_session(session)
    accounts = Accounts(session)
    if not accounts.exist():
        raise ConfigError(f"{session} has no accounts: a reading centre's reads must name a clinician; add them with "
                          f"drtrt accounts add NAME --role reader --data-dir {session}")
    chosen = load_pathway(pathway) if pathway is not None else None
    store = SessionStore(session / "session.db")
    try:
        name = " ".join((organisation or "").split()) or store.meta().get("organisation")
        if not name:
            raise ConfigError("give --organisation: the reading centre's name, the Verifying Organization its reads "
                              "are sent with (kept in the session for the next start)")
        store.set_meta("organisation", name)
        if chosen is not None:
            keep_pathway(store, chosen)
        linked = None
        if link is not None:
            from drtrt.station.centre_link import CentreLink

            linked = CentreLink(store, session, **link)
    except BaseException:
        store.close()
        raise
    centre = Centre(session, name, Desk(store), AccountGuard(accounts), CentreTemplates(HERE / "templates"),
                    link=linked)
    middleware = [Middleware(SessionMiddleware, secret_key=session_secret(session), session_cookie="drtrt_centre",
                             max_age=12 * 3600, same_site="strict", https_only=False),
                  Middleware(SecurityHeaders),
                  Middleware(OperatorGuard, pins=None, people=centre.people, max_upload_bytes=max_upload_bytes)]
    app = Starlette(routes=ROUTES, middleware=middleware, exception_handlers={HTTPException: http_error_page})
    app.state.station = centre
    return app


def serve_centre(session: str | Path, host: str = "127.0.0.1", port: int = 8090, pathway: str | None = None,
                 organisation: str | None = None, log: Callable[[str], None] = print, link: dict | None = None) -> None:
    """Serve the centre's pages until Ctrl-C / SIGTERM (uvicorn's handlers); with ``link`` (the PACS, as
    :func:`create_centre_app` takes it) its loop fetches and sends while the pages run."""
    from drtrt.station.server import _listen, address, run_app

    app = create_centre_app(session, organisation, pathway, link=link)
    store, running = app.state.station.worker.store, app.state.station.link
    try:
        sock = _listen(host, port)
    except BaseException:
        store.close()                                     # a busy port: one line, nothing served
        raise
    try:
        with sock:
            if running is not None:
                running.start()
            run_app(app, sock, f"reading centre serving {address(host, port)} — session {session}, "
                    f"{app.state.station.organisation}"
                    + (f", PACS {running.state.pacs} every {running.every_s:g} s" if running else ""), log)
    finally:
        if running is not None:
            running.stop()
        store.close()
        log("reading centre stopped")
