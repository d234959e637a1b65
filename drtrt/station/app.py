"""The screening station's web app (Starlette + Jinja2), served by ``drtrt station``.

Pages: the day (dashboard), a new patient, the visit at the camera (a checklist of the photos the
protocol asks for, each with its result), the printable report. Pages update live by long-polling
``/api/version`` and re-fetching their panel. Every script, style and picture comes from the app
itself (a Content-Security-Policy of 'self' enforces it): nothing leaves the machine.

Safe by default: on a loopback address anyone at the machine is the operator; on any other address
the app requires ``--pin`` and a login. Every POST carries a CSRF token; photos are served by
content hash only, never by a path from the request; uploads are limited in size and go through
the same intake checks as the camera's photos.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from drtrt import __version__
from drtrt.errors import ConfigError
from drtrt.runtime.quality import ADVICE
from drtrt.runtime.report import model_banner
from drtrt.runtime.visits import Protocol, Visit
from drtrt.station import i18n
from drtrt.station.dashboard import day_summary, disk_space, forward_state, local_time, model_state, read_parity
from drtrt.station.images import lesion_colours, lesion_layer, photo_path, view_jpeg
from drtrt.station.middleware import LOGIN_PATH, OperatorGuard, SecurityHeaders, http_error_page
from drtrt.station.security import MAX_UPLOAD_BYTES, PinGuard, csrf_token, image_kind, session_secret
from drtrt.station.worker import StationWorker

HERE = Path(__file__).parent
SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StationConfig:
    data_dir: Path
    pin: str | None = None                 # required off loopback
    host: str = "127.0.0.1"
    parity: Path | None = None             # a `drtrt parity --json` record for the model
    max_upload_bytes: int = MAX_UPLOAD_BYTES


class _Ctx:
    """What one request needs: its language, session, CSRF token."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.language = i18n.pick(request.cookies.get("lang"), request.headers.get("accept-language"))
        self.t = i18n.translations(self.language)
        self.csrf = csrf_token(request.session)

    def _(self, text: str, **values) -> str:
        out = self.t.gettext(text)
        return out % values if values else out


def create_app(cfg: StationConfig, worker: StationWorker, forwarder=None) -> Starlette:
    """The station's ASGI app over a started ``worker`` (and a :class:`~.forward.Forwarder`, when results
    are sent to a hospital)."""
    guard = PinGuard.from_pin(cfg.pin) if cfg.pin else None
    envs: dict[str, Environment] = {}
    info = worker.session.predictor.info
    parity = read_parity(cfg.parity)

    def env(language: str) -> Environment:
        if language not in envs:
            e = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                            extensions=["jinja2.ext.i18n"])
            e.install_gettext_translations(i18n.translations(language), newstyle=True)
            e.filters["when"] = local_time
            envs[language] = e
        return envs[language]

    def render(ctx: _Ctx, name: str, status: int = 200, **values) -> HTMLResponse:
        meta = worker.store.meta()
        page = env(ctx.language).get_template(name).render(
            csrf=ctx.csrf, language=ctx.language, languages=i18n.LANGUAGES, banner=model_banner(meta),
            model=meta, path=ctx.request.url.path, version=worker.version, worker_failed=worker.failed,
            login_needed=guard is not None, advice=ADVICE, **values)
        return HTMLResponse(page, status_code=status)

    # -- pages ------------------------------------------------------------------------------------
    async def dashboard(request: Request) -> Response:
        ctx = _Ctx(request)
        return render(ctx, "dashboard.html", **day_summary(worker), active=worker.active_visit(),
                      model_state=model_state(worker, info, parity), disk=disk_space(cfg.data_dir),
                      forward=forward_state(worker, forwarder),
                      camera=worker.cfg.camera_dir, waiting=worker.waiting_on_camera, notices=list(worker.notices)[:5])

    async def dashboard_panel(request: Request) -> Response:
        ctx = _Ctx(request)
        return render(ctx, "_day.html", **day_summary(worker), active=worker.active_visit(),
                      waiting=worker.waiting_on_camera, notices=list(worker.notices)[:5])

    async def new_patient(request: Request) -> Response:
        ctx = _Ctx(request)
        query = request.query_params.get("q", "")[:64]
        found = worker.book.find_patients(query) if query else []
        return render(ctx, "new_patient.html", found=found, query=query, fields=worker.cfg.protocol.fields,
                      error=None, values={})

    async def open_visit(request: Request) -> Response:
        ctx = _Ctx(request)
        form = request.state.form
        values = {k: str(form.get(k) or "") for k in ("patient", "name", "birth_date", "fields")}
        try:
            fields = int(values["fields"] or worker.cfg.protocol.fields)
            patient = worker.book.register(values["patient"], values["name"], values["birth_date"])
            visit_id = worker.book.open_visit(patient.id, Protocol(fields))
        except (ConfigError, ValueError) as exc:
            return render(ctx, "new_patient.html", status=400, found=[], query="", fields=worker.cfg.protocol.fields,
                          error=ctx._(str(exc)), values=values)
        worker.set_active(visit_id)
        return RedirectResponse(f"/visits/{visit_id}", status_code=303)

    def _visit(visit_id: int) -> Visit:
        try:
            return worker.book.visit(visit_id)
        except ConfigError:
            raise HTTPException(404, "no such visit") from None

    async def visit_page(request: Request) -> Response:
        ctx = _Ctx(request)
        visit = _visit(request.path_params["visit_id"])
        return render(ctx, "visit.html", visit=visit, active=worker.active_visit(), task=info.task,
                      colours=lesion_colours(info.task), error=request.query_params.get("error"),
                      problems=worker.visit_notices(visit.id))

    async def visit_panel(request: Request) -> Response:
        ctx = _Ctx(request)
        visit = _visit(request.path_params["visit_id"])
        return render(ctx, "_visit_panel.html", visit=visit, active=worker.active_visit(), task=info.task,
                      colours=lesion_colours(info.task), problems=worker.visit_notices(visit.id))

    async def visit_action(request: Request) -> Response:
        ctx = _Ctx(request)
        visit = _visit(request.path_params["visit_id"])
        action, form = request.path_params["action"], request.state.form
        try:
            if action == "target":
                worker.book.set_target(visit.id, str(form.get("slot") or "") or None)
                worker.set_active(visit.id)
            elif action == "camera":
                worker.set_active(visit.id)
            elif action == "close":
                worker.book.close_visit(visit.id)
                if worker.active_visit() == visit.id:
                    worker.set_active(None)
                worker.session.write_reports([visit.patient.id])
                if forwarder is not None:
                    forwarder.now()
                worker.changed()
                return RedirectResponse(f"/visits/{visit.id}/report", status_code=303)
            elif action == "upload":
                upload = form.get("photo")
                if upload is None or not hasattr(upload, "read"):
                    raise ConfigError("choose a photo to upload")
                data = await upload.read(cfg.max_upload_bytes + 1)
                if len(data) > cfg.max_upload_bytes:
                    raise ConfigError("the file is too large for a fundus photo")
                if image_kind(data) is None:
                    raise ConfigError("this file is not a photo (JPEG, PNG, TIFF, BMP or DICOM)")
                worker.take(data, visit.id, source="upload", slot=str(form.get("slot") or "") or None)
            else:
                raise HTTPException(404)
        except ConfigError as exc:
            return RedirectResponse(f"/visits/{visit.id}?error={quote(ctx._(str(exc)))}", status_code=303)
        worker.changed()
        return RedirectResponse(f"/visits/{visit.id}", status_code=303)

    async def report(request: Request) -> Response:
        ctx = _Ctx(request)
        visit = _visit(request.path_params["visit_id"])
        return render(ctx, "report.html", visit=visit, task=info.task, colours=lesion_colours(info.task),
                      printed=time.strftime("%Y-%m-%d %H:%M"), drtrt_version=__version__)

    async def image(request: Request) -> Response:
        sha, kind = request.path_params["sha"], request.path_params["kind"]
        if not SHA.match(sha):
            raise HTTPException(404)
        path = photo_path(cfg.data_dir, sha)
        if kind == "view.jpg":
            return FileResponse(view_jpeg(cfg.data_dir, sha, path), media_type="image/jpeg")
        match = re.fullmatch(r"layer-([A-Za-z0-9]{1,8})\.png", kind)
        if match and match[1] in info.task.lesion_codes:
            layer = lesion_layer(worker, cfg.data_dir, sha, path, info.task.label(match[1]))
            if layer is None:
                raise HTTPException(404)
            return FileResponse(layer, media_type="image/png")
        raise HTTPException(404)

    async def api_version(request: Request) -> Response:
        since = request.query_params.get("since", "")[:64]
        wait = 20.0 if since else 0.0
        import anyio

        version = await anyio.to_thread.run_sync(worker.wait_change, since, wait)
        return JSONResponse({"version": version})

    async def api_visit(request: Request) -> Response:
        visit = _visit(request.path_params["visit_id"])
        return JSONResponse(_visit_json(visit))

    async def set_language(request: Request) -> Response:
        code = request.path_params["code"]
        target = request.query_params.get("next", "/")
        if not target.startswith("/") or target.startswith("//") or "\\" in target:
            target = "/"
        response = RedirectResponse(target, status_code=303)
        if code in i18n.LANGUAGES:
            response.set_cookie("lang", code, max_age=365 * 86400, samesite="strict", httponly=True)
        return response

    async def login(request: Request) -> Response:
        ctx = _Ctx(request)
        if guard is None:
            return RedirectResponse("/", status_code=303)
        error = None
        client = request.client.host if request.client else "?"
        if request.method == "POST":
            wait = guard.wait_s(client)
            if wait == 0 and guard.check(client, str(request.state.form.get("pin") or "")):
                request.session.clear()
                request.session["operator"] = True
                return RedirectResponse("/", status_code=303)
            wait = guard.wait_s(client)
            error = (ctx._("Too many wrong PINs: wait %(seconds)d seconds.", seconds=int(wait) + 1) if wait
                     else ctx._("Wrong PIN."))
        return render(ctx, "login.html", status=401 if error else 200, error=error)

    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse(LOGIN_PATH if guard else "/", status_code=303)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": worker.failed is None, "worker": worker.failed or "running",
                             "pending": worker.pending}, status_code=200 if worker.failed is None else 503)

    routes = [
        Route("/", dashboard), Route("/panel", dashboard_panel), Route("/patients/new", new_patient),
        Route("/visits", open_visit, methods=["POST"]),
        Route("/visits/{visit_id:int}", visit_page), Route("/visits/{visit_id:int}/panel", visit_panel),
        Route("/visits/{visit_id:int}/report", report),
        Route("/visits/{visit_id:int}/{action:str}", visit_action, methods=["POST"]),
        Route("/image/{sha:str}/{kind:str}", image),
        Route("/api/version", api_version), Route("/api/visits/{visit_id:int}", api_visit),
        Route("/lang/{code:str}", set_language), Route(LOGIN_PATH, login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]), Route("/health", health),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(SessionMiddleware, secret_key=session_secret(cfg.data_dir), session_cookie="drtrt_station",
                             max_age=12 * 3600, same_site="strict", https_only=False),
                  Middleware(SecurityHeaders),
                  Middleware(OperatorGuard, pins=guard, max_upload_bytes=cfg.max_upload_bytes)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error_page})


def _visit_json(visit: Visit) -> dict:
    return {"id": visit.id, "patient": visit.patient.id, "opened": visit.opened, "closed": visit.closed,
            "verdict": visit.verdict, "closed_verdict": visit.closed_verdict, "target": visit.target,
            "complete": visit.complete,
            "eyes": {eye: v.verdict for eye, v in visit.eyes.items()},
            "slots": [{"slot": s.name, "state": s.state, "sha256": s.sha256,
                       "status": s.row.status if s.row else None, "code": (s.row.record.get("code") if s.row else None),
                       "grade": s.row.record.get("grade") if s.row else None, "warnings": s.warnings,
                       "replaced": len(s.replaced)} for s in visit.slots]}
