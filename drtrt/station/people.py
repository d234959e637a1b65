"""The people at the station: logging in (by name and PIN with accounts, else the shared PIN),
logging out, and the audit trail of a visit for those whose role may see it.

Each login, refused login and logout is an audit entry (:mod:`drtrt.clinic.audit`) in the session, so
the trail says who was at the station when, and how often a name was tried in vain.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from drtrt.clinic import audit
from drtrt.clinic.accounts import MAX_NAME, SHARED_PIN, Actor
from drtrt.station.handlers import Page, _requested_visit
from drtrt.station.middleware import LOGIN_PATH
from drtrt.station.state import actor_of, station_of

NOBODY = Actor("not logged in", "none")


async def login(request: Request) -> Response:
    """The login form: name and PIN when the station has accounts, else the shared PIN. A right one starts
    the person's session; wrong ones lock the client (and the name) out for a while."""
    page = Page(request)
    station = page.station
    pins, people = station.pins, station.people
    if pins is None and people is None:
        return RedirectResponse("/", status_code=303)
    error = None
    client = request.client.host if request.client else "?"
    if request.method == "POST":
        form = request.state.form
        secret = str(form.get("pin") or "")
        name = str(form.get("name") or "")[:MAX_NAME] if people is not None else ""
        if people is not None:
            actor = people.check(client, name, secret)
        else:
            actor = SHARED_PIN if pins.wait_s(client) == 0 and pins.check(client, secret) else None
        store = station.worker.store
        if actor is not None:
            request.session.clear()
            request.session["operator"] = True
            request.session["person"] = actor.name if people is not None else None
            audit.append(store, actor, "login", details={"client": client})
            return RedirectResponse("/", status_code=303)
        audit.append(store, NOBODY, "login_refused", details={"client": client, "name_tried": name or None})
        wait = people.wait_s(client, name) if people is not None else pins.wait_s(client)
        error = (page._("Too many wrong PINs: wait %(seconds)d seconds.", seconds=int(wait) + 1) if wait
                 else page._("Wrong name or PIN.") if people is not None else page._("Wrong PIN."))
    return page.render("login.html", status=401 if error else 200, error=error, by_name=people is not None)


async def logout(request: Request) -> Response:
    """Ends the person's session: the next person at the screen logs in again."""
    station = station_of(request)
    if station.pins is not None or station.people is not None:
        audit.append(station.worker.store, actor_of(request), "logout")
    request.session.clear()
    return RedirectResponse(LOGIN_PATH if station.pins is not None or station.people is not None else "/",
                            status_code=303)


async def audit_page(request: Request) -> Response:
    """The visit's audit entries and the whole chain's state (a role that may see the audit trail only:
    :data:`drtrt.station.middleware.NEEDS`)."""
    page = Page(request)
    visit = _requested_visit(request)
    store = page.station.worker.store
    return page.render("audit.html", visit=visit, entries=audit.entries(store, visit.id),
                       chain=audit.verify_store(store))
