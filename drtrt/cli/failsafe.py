"""``drtrt actions``, ``drtrt recall``, ``drtrt export-visits``, ``drtrt programme-report``: who still needs
something, who is due for rescreening, every visit of a date range, and the programme's numbers — read from
a session folder's store (not while the station or ``drtrt watch`` uses it)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Optional

import typer

from drtrt.cli.common import Flag, Opt, command, console

SessionArg = Annotated[Path, typer.Argument(help="Session folder (made by screen --out, watch or the station).",
                                            metavar="SESSION", show_default=False)]
FromOpt = Annotated[Optional[str], Opt("First day (YYYY-MM-DD, UTC), inclusive.", "DATE", "--from")]
ToOpt = Annotated[Optional[str], Opt("Last day (YYYY-MM-DD, UTC), inclusive.", "DATE", "--to")]
CsvFlag = Annotated[bool, Flag("Write CSV on stdout instead of a table.", "--csv")]


def _day(value: str | None, option: str) -> dt.date | None:
    from drtrt.errors import ConfigError

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"{option} must be a date (YYYY-MM-DD), found {value!r}") from None


def _book(session: Path):
    """The session's store (a context manager) and its visit book."""
    from drtrt.clinic.store import SessionStore
    from drtrt.clinic.visits import VisitBook
    from drtrt.errors import DataError

    if not (session / "session.db").is_file():
        raise DataError(f"{session} is not a session folder (no session.db); give the --out folder of drtrt screen "
                        "or watch, or a station's --data-dir")
    store = SessionStore(session / "session.db")
    return store, VisitBook(store)


def _out(text: str) -> None:
    typer.echo(text, nl=False)


@command()
def actions(session: SessionArg,
            overdue: Annotated[bool, Flag("Only those past their due date.", "--overdue")] = False,
            csv: CsvFlag = False) -> None:
    """Every visit that still needs something — refer urgently, refer, a human read, ungradable, incomplete,
    not closed — urgent first, each with its due date from the pathway; overdue ones marked. An item leaves
    the list only when a named person records its outcome at the station's Actions page."""
    from drtrt.cli.tables import actions_table
    from drtrt.clinic.failsafe import actions_csv, open_actions

    store, book = _book(session)
    with store:
        found = open_actions(book, overdue_only=overdue)
    if csv:
        return _out(actions_csv(found))
    console.print(actions_table(found) if found else "nothing open" + (" is overdue" if overdue else ""),
                  highlight=False, soft_wrap=True)


@command()
def recall(session: SessionArg, from_: FromOpt = None, to: ToOpt = None,
           overdue: Annotated[bool, Flag("Only those already overdue (due before today); --from/--to then "
                                         "default to any day.", "--overdue")] = False,
           csv: CsvFlag = False) -> None:
    """Patients due for rescreening from --from (default today) to --to (default 30 days on), by each
    latest visit's recall interval from the pathway; with --csv, the clinic's phone list."""
    from drtrt.cli.tables import recall_table
    from drtrt.clinic.recall import recall_csv, recall_list

    start, end = _day(from_, "--from"), _day(to, "--to")
    if not overdue:
        start = start or dt.datetime.now(dt.timezone.utc).date()
        end = end or start + dt.timedelta(days=30)
    store, book = _book(session)
    with store:
        found = recall_list(book, start, end, overdue_only=overdue)
    if csv:
        return _out(recall_csv(found))
    console.print(recall_table(found) if found else "nobody is due in that range", highlight=False, soft_wrap=True)


@command("export-visits")
def export_visits(session: SessionArg,
                  from_: Annotated[str, Opt("First day the visits opened (YYYY-MM-DD, UTC).", "DATE", "--from")],
                  to: Annotated[str, Opt("Last day (YYYY-MM-DD, UTC), inclusive.", "DATE", "--to")],
                  out: Annotated[Path, Opt("The CSV file to write.", "FILE", "--out")]) -> None:
    """One CSV row per visit opened in the range: opened, closed, operator, verdict per eye, R and M,
    refusals, retakes, reader, the failsafe's outcome."""
    from drtrt.clinic.visit_export import visits_csv
    from drtrt.errors import DataError
    from drtrt.fileio import atomic_write

    start, end = _day(from_, "--from"), _day(to, "--to")
    store, book = _book(session)
    with store:
        text = visits_csv(book, start, end)
    try:
        atomic_write(out, text)
    except OSError as exc:
        raise DataError(f"cannot write {out} ({exc.strerror or exc})") from None
    console.print(f"{text.count(chr(10)) - 1} visit(s) from {start} to {end} written to {out}", highlight=False,
                  soft_wrap=True)


@command()
def letter(session: SessionArg,
           patient: Annotated[str, Opt("The patient ID.", "ID", "--patient")],
           out: Annotated[Path, Opt("The letter to write: .html (print view) or .pdf.", "FILE", "--out")],
           visit: Annotated[Optional[int], Opt("The visit (default: the patient's latest).", "N", "--visit")] = None,
           lang: Annotated[str, Opt("The letter's language: en or es.", "CODE", "--lang")] = "en") -> None:
    """The referral letter of a visit whose verdict is refer or refer urgently: destination, urgency and due
    date from the pathway, findings in words, pictures, model and reader provenance; A4, as HTML or PDF.
    Writing it records nothing: "letter sent" is recorded by a named person at the station's Actions page."""
    from drtrt.clinic.letters import letter_html
    from drtrt.clinic.referrals import find_referral
    from drtrt.errors import ConfigError, DataError
    from drtrt.fileio import atomic_write
    from drtrt.station.i18n import LANGUAGES, translator

    if lang not in LANGUAGES:
        raise ConfigError(f"--lang must be one of {', '.join(LANGUAGES)}, found {lang!r}")
    if out.suffix.lower() not in (".html", ".pdf"):
        raise ConfigError(f"--out must end in .html or .pdf, found {out.name!r}")
    store, _ = _book(session)
    with store:
        referral = find_referral(store, patient, visit)
        page = letter_html(referral, store.meta(), session, store.task(), translator(lang), lang)
    data: str | bytes = page
    if out.suffix.lower() == ".pdf":
        from drtrt.clinic.letter_pdf import html_to_pdf

        data = html_to_pdf(page)
    try:
        atomic_write(out, data)
    except OSError as exc:
        raise DataError(f"cannot write {out} ({exc.strerror or exc})") from None
    kind = "urgent" if referral.urgent else "routine"
    console.print(f"{kind} referral of {patient} (visit {referral.visit}) to {referral.destination}, due "
                  f"{referral.due.isoformat()}: letter written to {out}", highlight=False, soft_wrap=True)


@command("programme-report")
def programme_report(sessions: Annotated[list[Path], typer.Argument(
                         help="Session folders (made by screen --out, watch or the station), added up.",
                         metavar="SESSION...", show_default=False)],
                     from_: Annotated[str, Opt("First day the visits opened (YYYY-MM-DD, UTC).", "DATE", "--from")],
                     to: Annotated[str, Opt("Last day (YYYY-MM-DD, UTC), inclusive.", "DATE", "--to")],
                     out: Annotated[Path, Opt("The folder to write programme.html and one CSV per table to.", "DIR",
                                              "--out")]) -> None:
    """The programme's numbers for a date range, as charts with their tables (one HTML file that prints and
    needs no network) and CSV: visits, patients, imageability, refusals by reason, camera and operator,
    referral rate by week and by grade, time from photo to referral outcome, overdue referrals."""
    import contextlib

    from drtrt.clinic.programme import programme
    from drtrt.clinic.programme_report import write_report

    start, end = _day(from_, "--from"), _day(to, "--to")
    names = [s.name or str(s) for s in sessions]
    names = names if len(set(names)) == len(names) else [str(s) for s in sessions]
    with contextlib.ExitStack() as stack:
        books = []
        for name, session in zip(names, sessions):
            store, book = _book(session)
            stack.enter_context(store)
            books.append((name, book))
        prog = programme(books, start, end)
    written = write_report(prog, out)
    visits = prog.table("summary").rows[0][1]
    console.print(f"{visits} visit(s) from {start} to {end}: {written[0]} and {len(written) - 1} CSV file(s) "
                  f"in {out}", highlight=False, soft_wrap=True)
