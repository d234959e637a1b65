"""The reading centre's pages (routes in :data:`drtrt.station.centre_app.ROUTES`; reader and lead roles only,
:data:`drtrt.station.middleware.NEEDS`): the queue and the read page over a centre's session folder.

The queue (:func:`drtrt.integration.centre_reads.queue`) lists the pulled visits waiting for a read, most urgent
first, with the stage each waits for; a visit the logged-in reader has read already is shown as waiting for
another person, without a link. The read page shows the station's pictures at full resolution with zoom (the
lesion outlines are drawn in them: the station sends one picture per photo), the model's result and
provenance, the patient's previous pulled visit beside it, the reads so far to the arbitrator only (a second
reader reads blind), and the grade form in the pathway's form. The read is the logged-in account's
(:func:`~drtrt.integration.centre_reads.read_visit`, audited); what to fix comes back on the page.

The queue page first lists the studies in conflict (:mod:`drtrt.integration.centre_conflicts`: two current
reports, "two final results for one visit: resolve at the PACS", a referable one first, with each report's UID);
such a visit has no read page (409) and is never pushed.

The queue page also says what waits to be sent (final reads the PACS has not confirmed) and, when the server
was given the PACS (:mod:`.centre_link`), when the PACS was last reached, the last try's problem as a warning,
and the buttons "Fetch new studies" and "Send final reads now" (POST, CSRF-checked, the "read" permission).
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from drtrt.clinic.patients import EYES
from drtrt.clinic.reads import ICDR_GRADES, M_GRADES, R_GRADES, grade_string
from drtrt.errors import ConfigError, DataError
from drtrt.integration.centre_conflicts import conflict_of, conflicts
from drtrt.integration.centre_reads import (centre_pathway, load, load_reads, model_verdict, queue, read_visit,
                                            state, unsent, visit_dir)
from drtrt.station import i18n
from drtrt.station.handlers import Page
from drtrt.station.state import actor_of, station_of


def _folder(request: Request) -> tuple[Path, dict]:
    """The pulled visit the URL names (404 for one that is not kept)."""
    centre = station_of(request)
    try:
        folder = visit_dir(centre.session, request.path_params["study"])
    except DataError:
        raise HTTPException(404, "no such visit") from None
    visit = load(folder)
    if not visit:
        raise HTTPException(404, "no such visit")
    return folder, visit


def previous_visit(session: Path, visit: dict) -> dict | None:
    """The same patient's pulled visit before ``visit`` (by study date, then UID), if there is one."""
    here = (visit.get("date", ""), visit["study"])
    earlier = [v for v in (load(f) for f in (session / "visits").glob("*"))
               if v and v.get("patient") == visit["patient"] and (v.get("date", ""), v["study"]) < here]
    return max(earlier, key=lambda v: (v.get("date", ""), v["study"]), default=None)


async def queue_page(request: Request) -> Response:
    """What waits for a read at the centre, most urgent first."""
    page = Page(request)
    centre = page.station
    pathway = centre_pathway(centre.worker.store)
    items = queue(centre.session, pathway, reader=actor_of(request).name)
    return page.render("centre_reads.html", items=items, rate=round(100 * pathway.sample_rate),
                       second_read=pathway.second_read, organisation=centre.organisation,
                       link=link_view(centre.link), unsent=unsent(centre.session, pathway, fhir=_fhir(centre)),
                       conflicts=conflicts(centre.session))


def _fhir(centre) -> bool:
    return centre.link is not None and centre.link.state.fhir is not None


def link_view(link) -> dict | None:
    """The link's state as the queue page shows it (times as HH:MM, this machine's clock); None: no PACS given."""
    if link is None:
        return None
    state = link.state
    return {"pacs": state.pacs, "fhir": state.fhir, "problem": state.problem, "stale": state.stale,
            "reached": time.strftime("%H:%M", time.localtime(state.reached)) if state.reached else None,
            "every": f"{link.every_s:g}"}


async def fetch_now(request: Request) -> Response:
    """The "Fetch new studies" button: a pull now; back to the queue (which says how it went)."""
    link = station_of(request).link
    if link is None:
        raise HTTPException(404, "this server was not given a PACS (--dicomweb)")
    await run_in_threadpool(link.fetch)
    return RedirectResponse("/reads", status_code=303)


async def send_now(request: Request) -> Response:
    """The "Send final reads now" button: a push now, the person who pressed it audited as the sender."""
    link = station_of(request).link
    if link is None:
        raise HTTPException(404, "this server was not given a PACS (--dicomweb)")
    await run_in_threadpool(link.send, actor_of(request))
    return RedirectResponse("/reads", status_code=303)


async def read_page(request: Request) -> Response:
    """One pulled visit to read: its pictures, the previous visit's, the model's result, the grade form."""
    page = Page(request)
    centre = page.station
    folder, visit = _folder(request)
    if conflict_of(folder) is not None:
        raise HTTPException(409, "two final results for one visit: resolve at the PACS")
    pathway = centre_pathway(centre.worker.store)
    reading = state(visit, load_reads(folder), pathway)
    mine = any(r.reader.casefold() == actor_of(request).name.casefold() for r in reading.reads)
    return page.render("centre_read.html", visit=visit, previous=previous_visit(centre.session, visit),
                       model_verdict=model_verdict(visit, pathway), reading=reading, mine=mine,
                       form=pathway.read_form, eyes=EYES, r_grades=R_GRADES, m_grades=M_GRADES,
                       icdr_grades=ICDR_GRADES, organisation=centre.organisation,
                       error=request.query_params.get("error"))


async def read_submit(request: Request) -> Response:
    """Keep the logged-in person's read; back to the queue (or to the page, saying what to fix)."""
    centre = station_of(request)
    folder, visit = _folder(request)
    form = request.state.form
    store = centre.worker.store
    try:
        read_form = centre_pathway(store).read_form
        grades = {eye: grade_string(read_form, {k: str(form.get(f"{eye}_{k}") or "") for k in ("u", "r", "m", "icdr",
                                                                                               "dme")})
                  for eye in EYES}
        read_visit(store, centre.session, visit["study"], grades, actor_of(request), centre.organisation,
                   reason=str(form.get("reason") or "") or None)
    except (ConfigError, DataError) as exc:
        said = i18n.translate(Page(request).t, exc.args[0] if exc.args else str(exc))
        return RedirectResponse(f"/reads/{visit['study']}?error={quote(said)}", status_code=303)
    if centre.link is not None:                 # a final read goes out soon, not at the next turn of the loop
        centre.link.now()
    return RedirectResponse("/reads", status_code=303)


async def picture(request: Request) -> Response:
    """A pulled picture at full resolution: only one the visit lists (never a path from the request)."""
    folder, visit = _folder(request)
    name = request.path_params["name"]
    if name not in [photo["png"] for photo in visit.get("photos", [])] or not (folder / name).is_file():
        raise HTTPException(404, "no such picture")
    return FileResponse(folder / name, media_type="image/png")
