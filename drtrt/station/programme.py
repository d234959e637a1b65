"""The station's Programme page: the programme's numbers for a date range as charts with their tables
(:mod:`drtrt.clinic.programme`, drawn by :mod:`drtrt.clinic.programme_report`, the same as
``drtrt programme-report``). Read-only, behind the login like every page; in the operator's language.

Each chart is an SVG picture inside the page (a ``data:`` image, which the content-security policy
allows): no script, nothing fetched. Counting and drawing take seconds for a busy quarter (about 3.6 s
for 1,000 visits on this project's loaded 2-core machine), in a worker thread so the station keeps
answering meanwhile.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from drtrt.clinic.programme import programme
from drtrt.clinic.programme_report import report_body
from drtrt.errors import ConfigError
from drtrt.station import i18n
from drtrt.station.handlers import Page
from drtrt.station.state import now_of
from drtrt.station.worklists import query_days

DEFAULT_DAYS = 90                              # the page's default range: the last 13 weeks, today included
NO_CHARTS = "the charts need matplotlib, which is not installed (pip install 'drtrt[report]'): the tables only"


def _range(request: Request) -> tuple[dt.date, dt.date]:
    """(from, to) of the query; a value that is not a date, or a range backwards, raises ConfigError."""
    today = now_of(request).astimezone(dt.timezone.utc).date()
    first, last = query_days(request)
    end = last or today
    start = first or end - dt.timedelta(days=DEFAULT_DAYS)
    if end < start:
        raise ConfigError("the last day is before the first")
    return start, end


async def programme_page(request: Request) -> Response:
    """Visits, patients, imageability, refusals, referral rates, time to outcome, overdue referrals."""
    page = Page(request)
    try:
        start, end = _range(request)
    except ConfigError as exc:
        return page.render("programme.html", status=400, error=page._(str(exc)), start=None, end=None, body="")
    tr = functools.partial(i18n.translate, page.t)
    charts = importlib.util.find_spec("matplotlib") is not None

    def draw() -> str:
        return report_body(programme([("station", page.station.worker.book)], start, end, now_of(request)), tr,
                           charts)

    body = await run_in_threadpool(draw)
    return page.render("programme.html", error=None if charts else page._(NO_CHARTS), start=start, end=end,
                       body=Markup(body))
