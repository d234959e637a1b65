"""The clinician's pages: the readers' queue and the read page (routes in :data:`drtrt.station.app.ROUTES`;
only reader and lead roles reach them, :data:`drtrt.station.middleware.NEEDS`).

The queue (:func:`drtrt.clinic.read_queue.read_queue`) lists what waits for a read, most urgent first,
with the quality sample of negatives; a station following a validation study (``--study``) queues every visit
of the study's period, marked so, as the study page (:mod:`.study`) counts them. The read page shows the
visit's photos at full resolution with zoom and the lesion layers, the patient's previous visit beside it,
the model's result, the reads so far, and the structured grade form in the pathway's form (NHS R/M/U or
ICDR with DME). A read is kept by :func:`drtrt.clinic.reads.record_read`, which audits it; what the reader
must fix comes back on the page, translated.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from drtrt.clinic.pathways import stored_pathway
from drtrt.clinic.patients import EYES
from drtrt.clinic.read_queue import previous_visit, read_queue
from drtrt.clinic.reads import ICDR_GRADES, M_GRADES, R_GRADES, grade_string, record_read
from drtrt.errors import ConfigError
from drtrt.station import i18n
from drtrt.station.handlers import Page, _requested_visit
from drtrt.station.images import lesion_colours
from drtrt.station.state import actor_of, station_of


async def queue_page(request: Request) -> Response:
    """What waits for a clinician's read, most urgent first."""
    page = Page(request)
    book = page.station.worker.book
    pathway = stored_pathway(book.store.meta())
    setup = page.station.cfg.study                            # a validation study: every visit of its period
    period = (setup.protocol.start, setup.protocol.end) if setup is not None else None
    return page.render("reads.html", items=read_queue(book, pathway, period), rate=round(100 * pathway.sample_rate),
                       second_read=pathway.second_read, study=setup.protocol if setup is not None else None)


async def read_page(request: Request) -> Response:
    """One visit to read: its photos, the previous visit's, the model's result, the reads so far, the grade form."""
    page = Page(request)
    station, visit = page.station, _requested_visit(request)
    book = station.worker.book
    before = previous_visit(book, visit.id)
    pathway = stored_pathway(book.store.meta())
    return page.render("read.html", visit=visit, previous=book.visit(before) if before is not None else None,
                       task=station.info.task, colours=lesion_colours(station.info.task), form=pathway.read_form,
                       eyes=EYES, r_grades=R_GRADES, m_grades=M_GRADES, icdr_grades=ICDR_GRADES,
                       error=request.query_params.get("error"))


async def read_submit(request: Request) -> Response:
    """Keep the logged-in person's read; back to the queue (or to the page, saying what to fix)."""
    station, visit = station_of(request), _requested_visit(request)
    form = request.state.form
    book = station.worker.book
    try:
        read_form = stored_pathway(book.store.meta()).read_form
        grades = {eye: grade_string(read_form, {k: str(form.get(f"{eye}_{k}") or "") for k in ("u", "r", "m", "icdr",
                                                                                               "dme")})
                  for eye in EYES}
        record_read(book, visit.id, grades, actor_of(request), reason=str(form.get("reason") or "") or None)
    except ConfigError as exc:
        said = i18n.translate(Page(request).t, exc.args[0] if exc.args else str(exc))
        return RedirectResponse(f"/reads/{visit.id}?error={quote(said)}", status_code=303)
    if station.forwarder is not None:                         # the read result goes out (again) soon
        station.forwarder.now()
    station.worker.changed()
    return RedirectResponse("/reads", status_code=303)
