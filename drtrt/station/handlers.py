"""The station's request handlers, one per route (:data:`drtrt.station.app.ROUTES` maps the URLs).

They reach the worker, the settings and the templates through the request (:func:`~.state.station_of`).
The login, role and CSRF checks have happened before a handler runs, in :class:`~.middleware.OperatorGuard`,
which leaves a POST's checked form in ``request.state.form`` and the person in ``request.state.actor``
(:func:`~.state.actor_of`); every action passes that person on, and its audit entry names them.
"""

from __future__ import annotations

import datetime as dt
import time
from urllib.parse import quote

from anyio import to_thread
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from drtrt import __version__
from drtrt.errors import ConfigError
from drtrt.runtime.quality import ADVICE
from drtrt.clinic.reports import model_banner, unchecked_model
from drtrt.clinic.visits import RETAKE_REASONS, PatientConflict, Protocol, Visit, retake_reason
from drtrt.station import i18n
from drtrt.station.dashboard import day_summary, disk_space, forward_state, model_state, reader_agreement
from drtrt.station.images import LAYER, SHA, full_jpeg, lesion_colours, lesion_layer, photo_path, view_jpeg
from drtrt.station.security import csrf_token, image_kind
from drtrt.clinic import audit
from drtrt.clinic.accounts import Actor, may
from drtrt.station.state import Station, actor_of, now_of, station_of
from drtrt.validation_record import validation_why


class Page:
    """What one request's page needs: its language, the session's CSRF token, the station."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.station = station_of(request)
        self.language = i18n.pick(request.cookies.get("lang"), request.headers.get("accept-language"))
        self.t = i18n.translations(self.language)
        self.csrf = csrf_token(request.session)

    def _(self, text: str, **values) -> str:
        """``text`` (English: the app's or the runtime's words) in the operator's language, values filled in."""
        out = self.t.gettext(text)
        return out % values if values else out

    def render(self, name: str, status: int = 200, **values) -> HTMLResponse:
        """Template ``name`` with what every page shows: the model banner, the language, the live version."""
        worker = self.station.worker
        meta = worker.store.meta()
        actor = getattr(self.request.state, "actor", None)          # None: nobody logged in (the login page)
        text = self.station.templates(self.language).get_template(name).render(
            csrf=self.csrf, language=self.language, languages=i18n.LANGUAGES, banner=model_banner(meta),
            gate=unchecked_model(meta), unvalidated=validation_why(meta),
            model=meta, path=self.request.url.path, version=worker.version, worker_failed=worker.failed,
            login_needed=self.station.pins is not None or self.station.people is not None, advice=ADVICE,
            actor=actor, may=lambda what: actor is not None and may(actor.role, what), **values)
        return HTMLResponse(text, status_code=status)


def _requested_visit(request: Request) -> Visit:
    """The visit the URL names (404 for one that does not exist)."""
    try:
        return station_of(request).worker.book.visit(request.path_params["visit_id"])
    except ConfigError:
        raise HTTPException(404, "no such visit") from None


def _visit_json(visit: Visit) -> dict:
    """A visit as ``/api/visits/N`` answers it: what the pages and tests poll for."""
    return {"id": visit.id, "patient": visit.patient.id, "opened": visit.opened, "closed": visit.closed,
            "verdict": visit.verdict, "closed_verdict": visit.closed_verdict,       # ids (clinic.verdicts)
            "words": visit.words, "closed_words": visit.closed_words, "target": visit.target,
            "complete": visit.complete,
            "eyes": {eye: v.verdict for eye, v in visit.eyes.items()},
            "slots": [{"slot": s.name, "state": s.state, "sha256": s.sha256, "capture": s.capture_id,
                       "status": s.row.status if s.row else None, "code": (s.row.record.get("code") if s.row else None),
                       "grade": s.row.record.get("grade") if s.row else None, "warnings": s.warnings,
                       "reason": s.reason, "moved_from": s.moved_from, "tries": s.tries, "escalation": s.escalation,
                       "replaced": len(s.replaced), "retaken": s.replaced} for s in visit.slots]}


# -- pages ----------------------------------------------------------------------------------------
async def dashboard(request: Request) -> Response:
    """The day: today's visits and figures, the model, the disk, the hospital link, the camera."""
    page = Page(request)
    station, worker = page.station, page.station.worker
    return page.render("dashboard.html", **day_summary(worker, now_of(request)), active=worker.active_visit(),
                       model_state=model_state(worker, station.info, station.parity),
                       disk=disk_space(station.cfg.data_dir), forward=forward_state(worker, station.forwarder),
                       camera=worker.cfg.camera_dir, waiting=worker.waiting, notices=list(worker.notices)[:5],
                       error=request.query_params.get("error"), agreement=_agreement(request, station))


def _agreement(request: Request, station: Station) -> dict:
    """The model's weekly agreement with the readers; hidden while the station's validation study runs (its
    weekly sensitivity would be a look at a pre-registered endpoint: :mod:`.study`)."""
    setup = station.cfg.study
    if setup is not None and setup.phase(now_of(request).astimezone(dt.timezone.utc).date()) == "running":
        return {"weeks": [], "missing": None, "hidden": True}
    census = (setup.protocol.start, setup.protocol.end) if setup is not None else None
    return reader_agreement(station.worker, census=census)


async def dashboard_panel(request: Request) -> Response:
    """The day's live part, re-fetched when the version changes."""
    page = Page(request)
    worker = page.station.worker
    return page.render("_day.html", **day_summary(worker, now_of(request)), active=worker.active_visit(),
                       waiting=worker.waiting, notices=list(worker.notices)[:5])


async def new_patient(request: Request) -> Response:
    """The registration form, with the patients a search finds."""
    page = Page(request)
    worker = page.station.worker
    query = request.query_params.get("q", "")[:64]
    found = worker.book.find_patients(query) if query else []
    return page.render("new_patient.html", found=found, query=query, fields=worker.cfg.protocol.fields,
                       error=None, values={}, conflict=None)


async def open_visit(request: Request) -> Response:
    """Registers the patient and opens their visit at the camera (the form again, saying why, if refused)."""
    page = Page(request)
    worker = page.station.worker
    form = request.state.form
    values = {k: str(form.get(k) or "") for k in ("patient", "name", "birth_date", "fields")}
    try:
        fields = int(values["fields"] or worker.cfg.protocol.fields)
        by = actor_of(request)
        patient = worker.book.register(values["patient"], values["name"], values["birth_date"],
                                       change=form.get("change") == "yes", by=by)
        visit_id = worker.book.open_visit(patient.id, Protocol(fields), by=by)
    except PatientConflict as exc:        # an ID already registered: open theirs, or change it on purpose
        return page.render("new_patient.html", status=409, found=[], query="", fields=fields, error=None,
                           values=values, conflict=exc.patient)
    except (ConfigError, ValueError) as exc:
        return page.render("new_patient.html", status=400, found=[], query="", fields=worker.cfg.protocol.fields,
                           error=page._(str(exc)), values=values, conflict=None)
    worker.set_active(visit_id)
    return RedirectResponse(f"/visits/{visit_id}", status_code=303)


async def visit_page(request: Request) -> Response:
    """The visit at the camera: the checklist of photos, each with its result."""
    page = Page(request)
    station, visit = page.station, _requested_visit(request)
    return page.render("visit.html", error=request.query_params.get("error"), **_visit_values(station, visit))


async def visit_panel(request: Request) -> Response:
    """The visit page's live part, re-fetched when the version changes."""
    page = Page(request)
    station, visit = page.station, _requested_visit(request)
    return page.render("_visit_panel.html", **_visit_values(station, visit))


def _visit_values(station: Station, visit: Visit) -> dict:
    """What the visit page and its live panel show: the visit, the camera photos waiting to be asked
    about, the reasons a retake can give."""
    worker = station.worker
    return {"visit": visit, "active": worker.active_visit(), "task": station.info.task,
            "colours": lesion_colours(station.info.task), "problems": worker.visit_notices(visit.id),
            "waiting": worker.waiting, "reasons": RETAKE_REASONS}


async def report(request: Request) -> Response:
    """The printable report of one visit."""
    page = Page(request)
    station, visit = page.station, _requested_visit(request)
    audit.append(station.worker.store, actor_of(request), "print", visit=visit.id, patient=visit.patient.id,
                 details={"what": "the printable report was opened", "verdict": visit.closed_verdict or visit.verdict})
    return page.render("report.html", visit=visit, task=station.info.task, colours=lesion_colours(station.info.task),
                       printed=time.strftime("%Y-%m-%d %H:%M"), drtrt_version=__version__)


# -- the visit page's buttons: each returns where the browser goes next ------------------------------
async def _choose_slot(station: Station, visit: Visit, form: FormData, by: Actor) -> str:
    """The slot the next photo fills; retaking a graded photo needs the reason chosen with it."""
    slot = str(form.get("slot") or "") or None
    graded = any(s.name == slot and s.state == "graded" for s in visit.slots)
    reason = retake_reason(str(form.get("reason") or ""), str(form.get("reason_text") or "")) if graded else None
    station.worker.book.set_target(visit.id, slot, reason, by=by)
    station.worker.set_active(visit.id)
    return f"/visits/{visit.id}"


async def _attach(station: Station, visit: Visit, form: FormData, by: Actor) -> str:
    """A person says whose a waiting camera photo is: this visit's chosen slot."""
    station.worker.attach_waiting(str(form.get("photo") or ""), visit.id, str(form.get("slot") or ""), by=by)
    return f"/visits/{visit.id}"


async def _discard(station: Station, visit: Visit, form: FormData, by: Actor) -> str:
    station.worker.discard_waiting(str(form.get("photo") or ""), by=by)
    return f"/visits/{visit.id}"


async def _move(station: Station, visit: Visit, form: FormData, by: Actor) -> str:
    """A photo of this visit to the other eye's slot, or to another patient's open visit (``patient``)."""
    book = station.worker.book
    capture = next((s for s in visit.slots if str(s.capture_id) == str(form.get("capture"))), None)
    if capture is None or capture.capture_id is None:
        raise ConfigError("only a photo filling a slot can be moved")
    patient = str(form.get("patient") or "").strip()
    target = visit if not patient else book.visit(book.open_visit_of(patient))
    eye = str(form.get("eye") or "")
    fields = [s.name for s in target.slots if s.eye == eye]
    if not fields:
        raise ConfigError("choose the eye the photo shows")
    same = f"{eye}/{capture.field_name}"
    book.move_capture(capture.capture_id, target.id, same if same in fields else fields[0], by=by)
    return f"/visits/{target.id}"


async def _to_camera(station: Station, visit: Visit, form: FormData, by: Actor) -> str:
    station.worker.set_active(visit.id, by=by)
    return f"/visits/{visit.id}"


async def _close(station: Station, visit: Visit, form: FormData, by: Actor) -> str:
    """Closes the visit, writes the patient's reports and sends the results soon: on to the report."""
    worker = station.worker
    worker.book.close_visit(visit.id, by=by)
    if worker.active_visit() == visit.id:
        worker.set_active(None)
    worker.session.write_reports([visit.id])
    if station.forwarder is not None:
        station.forwarder.now()
    return f"/visits/{visit.id}/report"


async def _upload(station: Station, visit: Visit, form: FormData, by: Actor) -> str:
    """A photo from the browser, through the same intake as the camera's once it is known to be one."""
    upload = form.get("photo")
    if upload is None or not hasattr(upload, "read"):
        raise ConfigError("choose a photo to upload")
    limit = station.cfg.max_upload_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ConfigError("the file is too large for a fundus photo")
    if image_kind(data) is None:
        raise ConfigError("this file is not a photo (JPEG, PNG, TIFF, BMP or DICOM)")
    station.worker.take(data, visit.id, source="upload", slot=str(form.get("slot") or "") or None, by=by)
    return f"/visits/{visit.id}"


VISIT_ACTIONS = {"target": _choose_slot, "camera": _to_camera, "close": _close, "upload": _upload,
                 "attach": _attach, "discard": _discard, "move": _move}


async def visit_action(request: Request) -> Response:
    """One of :data:`VISIT_ACTIONS`; what the operator must fix comes back on the visit page, translated."""
    station, visit = station_of(request), _requested_visit(request)
    action = VISIT_ACTIONS.get(request.path_params["action"])
    if action is None:
        raise HTTPException(404)
    try:
        target = await action(station, visit, request.state.form, actor_of(request))
    except ConfigError as exc:
        return RedirectResponse(f"/visits/{visit.id}?error={quote(Page(request)._(str(exc)))}", status_code=303)
    station.worker.changed()
    return RedirectResponse(target, status_code=303)


# -- pictures and the live API --------------------------------------------------------------------
async def image(request: Request) -> Response:
    """A kept photo's view or one lesion layer, by content hash only."""
    station = station_of(request)
    sha, kind = request.path_params["sha"], request.path_params["kind"]
    if not SHA.match(sha):
        raise HTTPException(404)
    data_dir, task = station.cfg.data_dir, station.info.task
    photo = photo_path(data_dir, sha)
    if kind in ("view.jpg", "full.jpg"):
        made = view_jpeg if kind == "view.jpg" else full_jpeg
        return FileResponse(made(data_dir, sha, photo), media_type="image/jpeg")
    match = LAYER.fullmatch(kind)
    if match and match[1] in task.lesion_codes:
        layer = lesion_layer(station.worker, data_dir, sha, photo, task.label(match[1]))
        if layer is None:
            raise HTTPException(404)
        return FileResponse(layer, media_type="image/png")
    raise HTTPException(404)


async def waiting_image(request: Request) -> Response:
    """A waiting camera photo's view, by its content hash: the worker knows its file, the request names none."""
    station = station_of(request)
    sha = request.path_params["sha"]
    if not SHA.match(sha):
        raise HTTPException(404)
    try:
        photo = station.worker.waiting_photo(sha)
    except ConfigError:
        raise HTTPException(404) from None
    return FileResponse(view_jpeg(station.cfg.data_dir, sha, photo.path), media_type="image/jpeg")


async def discard_waiting(request: Request) -> Response:
    """The day's page discards a waiting camera photo (kept on disk, never taken)."""
    try:
        station_of(request).worker.discard_waiting(request.path_params["sha"], by=actor_of(request))
    except ConfigError as exc:
        return RedirectResponse(f"/?error={quote(Page(request)._(str(exc)))}", status_code=303)
    return RedirectResponse("/", status_code=303)


async def api_version(request: Request) -> Response:
    """The long poll pages update by: at once without ``since``, else once the version moves on (20 s at most)."""
    worker = station_of(request).worker
    since = request.query_params.get("since", "")[:64]
    wait = 20.0 if since else 0.0
    version = await to_thread.run_sync(worker.wait_change, since, wait)
    return JSONResponse({"version": version})


async def api_visit(request: Request) -> Response:
    """One visit's state, for scripts and tests that follow a visit without parsing its page."""
    return JSONResponse(_visit_json(_requested_visit(request)))


# -- the operator (logging in and out: :mod:`.people`) ------------------------------------------------
async def set_language(request: Request) -> Response:
    """Keeps the operator's language in a cookie and goes back to the page, never to another site."""
    code = request.path_params["code"]
    target = request.query_params.get("next", "/")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = "/"
    response = RedirectResponse(target, status_code=303)
    if code in i18n.LANGUAGES:
        response.set_cookie("lang", code, max_age=365 * 86400, samesite="strict", httponly=True)
    return response


async def health(request: Request) -> Response:
    """For a container's health check (open: it needs no login): 503 once the worker has stopped."""
    worker = station_of(request).worker
    return JSONResponse({"ok": worker.failed is None, "worker": worker.failed or "running",
                         "pending": worker.pending}, status_code=200 if worker.failed is None else 503)
