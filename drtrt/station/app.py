"""The screening station's web app (Starlette + Jinja2), served by ``drtrt station``.

Pages: the day (dashboard), a new patient, the visit at the camera (a checklist of the photos the
protocol asks for, each with its result; the camera photos waiting for a person to say whose they
are), the printable report and referral letter (:mod:`.letters`), and the lists that span days
(:mod:`.worklists`): open actions with their outcomes, and who is due for rescreening; the programme's
numbers in charts (:mod:`.programme`); for the programme lead, the validation study's progress
(:mod:`.study`); for a clinician, the readers' queue and the read page
(:mod:`.reading`). Pages update live by long-polling
``/api/version`` and re-fetching their panel. Every script, style and picture comes from the app
itself (a Content-Security-Policy of 'self' enforces it): nothing leaves the machine.

Safe by default: on a loopback address anyone at the machine is the operator; on any other address
the app requires ``--pin`` and a login. A station folder with accounts (``drtrt accounts``) always
asks for a name and PIN, and each person's role limits what they may open (:mod:`.middleware`). Every POST carries a CSRF token; photos are served by
content hash only, never by a path from the request; uploads are limited in size and go through
the same intake checks as the camera's photos.

This module wires the app together: :data:`ROUTES` (every URL, to a handler in :mod:`.handlers`),
the middleware (:mod:`.middleware`: login, CSRF, security headers) and the shared state
(:mod:`.state`) the handlers reach through ``request.app.state``.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from drtrt.station import handlers, letters, people, programme, reading, study, worklists
from drtrt.station.dashboard import read_parity
from drtrt.station.forward import Forwarder
from drtrt.station.middleware import LOGIN_PATH, OperatorGuard, SecurityHeaders, http_error_page
from drtrt.clinic.accounts import Accounts
from drtrt.errors import ConfigError
from drtrt.station.security import AccountGuard, PinGuard, session_secret
from drtrt.station.state import Station, StationConfig, Templates
from drtrt.station.worker import StationWorker

HERE = Path(__file__).parent

ROUTES = [
    Route("/", handlers.dashboard), Route("/panel", handlers.dashboard_panel),
    Route("/patients/new", handlers.new_patient),
    Route("/visits", handlers.open_visit, methods=["POST"]),
    Route("/visits/{visit_id:int}", handlers.visit_page), Route("/visits/{visit_id:int}/panel", handlers.visit_panel),
    Route("/visits/{visit_id:int}/report", handlers.report), Route("/visits/{visit_id:int}/audit", people.audit_page),
    Route("/visits/{visit_id:int}/letter", letters.letter), Route("/visits/{visit_id:int}/letter.pdf", letters.letter_pdf),
    Route("/visits/{visit_id:int}/{action:str}", handlers.visit_action, methods=["POST"]),
    Route("/image/{sha:str}/{kind:str}", handlers.image),
    Route("/camera/{sha:str}/view.jpg", handlers.waiting_image),
    Route("/camera/{sha:str}/discard", handlers.discard_waiting, methods=["POST"]),
    Route("/actions", worklists.actions_page),
    Route("/actions/{visit_id:int}/outcome", worklists.outcome, methods=["POST"]),
    Route("/reads", reading.queue_page), Route("/reads/{visit_id:int}", reading.read_page),
    Route("/reads/{visit_id:int}/read", reading.read_submit, methods=["POST"]),
    Route("/recall", worklists.recall_page), Route("/recall.csv", worklists.recall_download),
    Route("/programme", programme.programme_page), Route("/study", study.study_page),
    Route("/api/version", handlers.api_version), Route("/api/visits/{visit_id:int}", handlers.api_visit),
    Route("/lang/{code:str}", handlers.set_language), Route(LOGIN_PATH, people.login, methods=["GET", "POST"]),
    Route("/logout", people.logout, methods=["POST"]), Route("/health", handlers.health),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]


def create_app(cfg: StationConfig, worker: StationWorker, forwarder: Forwarder | None = None) -> Starlette:
    """The station's ASGI app over a started ``worker`` (and a :class:`~.forward.Forwarder`, when results
    are sent to a hospital)."""
    accounts = Accounts(cfg.data_dir)
    if accounts.exist() and cfg.pin:
        raise ConfigError(f"{cfg.data_dir} has accounts: people log in by name and PIN there, not by a shared PIN; "
                          "start the station without --pin (and DRTRT_STATION_PIN)")
    station = Station(cfg, worker, forwarder, pins=PinGuard.from_pin(cfg.pin) if cfg.pin else None,
                      people=AccountGuard(accounts) if accounts.exist() else None,
                      info=worker.session.predictor.info, parity=read_parity(cfg.parity),
                      templates=Templates(HERE / "templates"))
    middleware = [Middleware(SessionMiddleware, secret_key=session_secret(cfg.data_dir), session_cookie="drtrt_station",
                             max_age=12 * 3600, same_site="strict", https_only=False),
                  Middleware(SecurityHeaders),
                  Middleware(OperatorGuard, pins=station.pins, people=station.people,
                             max_upload_bytes=cfg.max_upload_bytes)]
    app = Starlette(routes=ROUTES, middleware=middleware, exception_handlers={HTTPException: http_error_page})
    app.state.station = station
    return app
