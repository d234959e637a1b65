"""The station's lists that span days: the failsafe's open actions (with the outcome form) and call and
recall (with its CSV for the clinic's phone list). Routes in :data:`drtrt.station.app.ROUTES`.

Both are read from the session store on every request (:mod:`drtrt.clinic.failsafe`,
:mod:`drtrt.clinic.recall`), so midnight and a restart change nothing. The clock is
``app.state.clock`` when a test sets one, else the machine's (UTC).
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from drtrt.clinic.accounts import LOCAL, SHARED, Actor
from drtrt.clinic.failsafe import OUTCOME_WORDS, OUTCOMES, THEN, open_actions, record_outcome
from drtrt.clinic.recall import recall_csv, recall_list
from drtrt.errors import ConfigError
from drtrt.station.handlers import Page
from drtrt.station.state import actor_of, now_of, station_of

RECALL_DAYS = 30                               # the recall page's default range: today and the next 30 days


def operator_name(request: Request, form) -> str:
    """Who records an outcome, by name: the logged-in account's; with the shared PIN or no login the station
    cannot know, so the person types their name on the form (and the audit trail keeps both)."""
    actor = actor_of(request)
    return actor.name if named(actor) else str(form.get("person") or "")


def named(actor: Actor) -> bool:
    """The person is a logged-in account (not the shared PIN, not the machine's no-login)."""
    return actor.role not in (SHARED, LOCAL)


async def actions_page(request: Request) -> Response:
    """Every visit that still needs something, urgent first, overdue marked; each with its outcome form."""
    page = Page(request)
    overdue = request.query_params.get("overdue") == "1"
    found = open_actions(page.station.worker.book, now_of(request), overdue_only=overdue)
    return page.render("actions.html", ask_name=not named(actor_of(request)), actions=found, overdue=overdue, outcomes=OUTCOMES, then=THEN,
                       outcome_words=OUTCOME_WORDS, error=request.query_params.get("error"),
                       today=now_of(request).date())


async def outcome(request: Request) -> Response:
    """Records what a named person says happened to a visit's open action; back to the list (saying why if not)."""
    form = request.state.form
    station = station_of(request)
    outcome_, _, after = str(form.get("outcome") or "").partition(":")     # did_not_attend:rebook, …
    try:
        record_outcome(station.worker.book, request.path_params["visit_id"], outcome_, operator_name(request, form),
                       then=after or None, reason=str(form.get("reason") or "") or None, now=now_of(request),
                       actor=actor_of(request))
    except ConfigError as exc:
        return RedirectResponse(f"/actions?error={quote(Page(request)._(str(exc)))}#visit-"
                                f"{request.path_params['visit_id']}", status_code=303)
    station.worker.changed()
    return RedirectResponse("/actions", status_code=303)


def query_days(request: Request) -> tuple[dt.date | None, dt.date | None]:
    """The ``from`` and ``to`` days of a page's query (None where not given); one that is not a date raises
    ConfigError."""
    days = []
    for name in ("from", "to"):
        value = request.query_params.get(name, "").strip()[:10]
        try:
            days.append(dt.date.fromisoformat(value) if value else None)
        except ValueError:
            raise ConfigError("a date is YYYY-MM-DD") from None
    return days[0], days[1]


def _range(request: Request) -> tuple[dt.date | None, dt.date | None, bool]:
    """The recall page's (from, to, overdue) from its query; a date that is not one raises ConfigError."""
    overdue = request.query_params.get("overdue") == "1"
    today = now_of(request).astimezone(dt.timezone.utc).date()
    start, end = query_days(request)
    if not overdue:
        start = start or today
        end = end or start + dt.timedelta(days=RECALL_DAYS)
    return start, end, overdue


async def recall_page(request: Request) -> Response:
    """Patients due for rescreening in a date range (default: the next 30 days), or those overdue."""
    page = Page(request)
    error, found, start, end, overdue = None, [], None, None, False
    try:
        start, end, overdue = _range(request)
        found = recall_list(page.station.worker.book, start, end, now_of(request), overdue_only=overdue)
    except ConfigError as exc:
        error = page._(str(exc))
    query = urlencode({k: v for k, v in (("from", start), ("to", end), ("overdue", "1" if overdue else None)) if v})
    return page.render("recall.html", status=400 if error else 200, entries=found, start=start, end=end,
                       overdue=overdue, error=error, csv_url=f"/recall.csv?{query}")


async def recall_download(request: Request) -> Response:
    """The same list as CSV, for the clinic's phone list."""
    try:
        start, end, overdue = _range(request)
        found = recall_list(station_of(request).worker.book, start, end, now_of(request), overdue_only=overdue)
    except ConfigError as exc:
        return Response(Page(request)._(str(exc)), status_code=400, media_type="text/plain; charset=utf-8")
    name = f"recall-{start or 'any'}-{end or 'any'}{'-overdue' if overdue else ''}.csv"
    return Response(recall_csv(found), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
