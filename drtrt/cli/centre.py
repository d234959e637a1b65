"""``drtrt centre``: a reading centre reads what the stations sent to the PACS, and sends its reads back there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from drtrt.cli.common import Opt, _Command, app, cli_errors, console

centre_app = typer.Typer(name="centre", rich_markup_mode=None, add_completion=False, no_args_is_help=True,
                         help="A reading centre: pull the drtrt reports and pictures the stations sent to a PACS "
                              "(DICOMweb), read a visit, push the VERIFIED report back to the same PACS.")
app.add_typer(centre_app)

UrlOpt = Annotated[str, Opt("DICOMweb base URL of the PACS the stations send to, e.g. http://pacs:8042/dicom-web "
                            "(http://user:password@… for Basic authentication).", "URL", show_default=False)]
SessionArg = Annotated[Path, typer.Argument(help="The centre's session folder (made by centre pull).",
                                            metavar="SESSION", show_default=False)]
FhirOpt = Annotated[Optional[str], Opt("FHIR R4 base URL the stations send their DiagnosticReports to.", "URL")]
TimeoutOpt = Annotated[float, Opt("Seconds to wait for a server's answer.", "SECONDS")]


def _send(call):
    """Run ``call``; a PACS that cannot be reached or refuses becomes one line (exit 1)."""
    from drtrt.errors import SendError
    from drtrt.integration.senders import Rejected, Unreachable

    try:
        return call()
    except (Unreachable, Rejected) as exc:
        raise SendError(f"{exc}; nothing was marked sent: run it again when the PACS answers") from None


def _check_since(since: str | None) -> None:
    import datetime as dt

    from drtrt.errors import ConfigError

    if since is not None:
        try:
            dt.datetime.strptime(since, "%Y%m%d")
        except ValueError:
            raise ConfigError(f"--since needs a date as YYYYMMDD, found {since!r}") from None


@centre_app.command("pull", cls=_Command)
@cli_errors
def centre_pull(dicomweb: UrlOpt, out: Annotated[Path, Opt("The centre's session folder (made when missing).",
                                                          "SESSION", show_default=False)],
                fhir: FhirOpt = None,
                since: Annotated[Optional[str], Opt("Only studies of this date or later (YYYYMMDD).", "DATE")] = None,
                timeout: TimeoutOpt = 30.0) -> None:
    """Keep every drtrt report (SR) and picture (Secondary Capture) the PACS holds, one folder per visit, and
    with --fhir each visit's DiagnosticReport; what is already kept is not fetched again. A study with two current
    drtrt reports is not imported (a person resolves it at the PACS): the rest is pulled, then it exits 1."""
    from drtrt.integration.centre import Pacs, Server, pull

    Pacs(dicomweb)                                        # a malformed URL: a usage error, before anything
    if fhir:
        Server(fhir, "--fhir", "FHIR server")
    _check_since(since)
    report = _send(lambda: pull(dicomweb, out, timeout, fhir, since))
    console.print(f"{report.studies} stud{'y' if report.studies == 1 else 'ies'} at the PACS, {report.visits} with a "
                  f"drtrt report" + (f", {report.reports} with a DiagnosticReport" if fhir else "")
                  + f"; {len(report.added)} file(s) added to {out}", highlight=False, soft_wrap=True, markup=False)
    for conflict in report.conflicts:                  # the referable ones first
        refers = " (a report in it refers the patient)" if conflict["referable"] else ""
        console.print(f"conflict: study {conflict['study']} (patient {conflict['patient']}) has "
                      f"{len(conflict['reports'])} current drtrt reports{refers}: "
                      + ", ".join(f"{r['sr']} {r['verification']}" for r in conflict["reports"]),
                      highlight=False, soft_wrap=True, markup=False)
    if report.conflicts:
        from drtrt.errors import DataError

        raise DataError(f"{len(report.conflicts)} stud{'y' if len(report.conflicts) == 1 else 'ies'} not imported: two "
                        "final results for one visit; resolve at the PACS (the other studies were pulled)")


@centre_app.command("list", cls=_Command)
@cli_errors
def centre_list(session: SessionArg) -> None:
    """The pulled visits waiting for a read: those the model found referable first, then those it could not
    grade, then the rest; each with its pictures (PNG) to look at before reading."""
    from drtrt.integration.centre import queue

    waiting = queue(session)
    for visit in waiting:
        readers = ", ".join(visit["readers"])
        stage = "" if visit["stage"] == "primary" else f"  [{visit['stage']} read, read by {readers}]"
        console.print(f"{visit['study']}  {visit['patient']}  {visit.get('date') or '-'}  {visit['verdict']}{stage}",
                      highlight=False, soft_wrap=True, markup=False)
        for photo in visit["photos"]:
            console.print(f"    {session / 'visits' / visit['study'] / photo['png']} ({photo['eye']})", highlight=False,
                          soft_wrap=True, markup=False)
    console.print(f"{len(waiting)} visit(s) waiting for a read", highlight=False, soft_wrap=True, markup=False)
    from drtrt.integration.centre_conflicts import conflicts

    for conflict in conflicts(session):            # not in the queue: a person resolves them at the PACS first
        refers = ", a report in it refers the patient" if conflict.get("referable", True) else ""
        console.print(f"{conflict['study']}  {conflict.get('patient') or '-'}  two final results for one visit: "
                      f"resolve at the PACS ({', '.join(r['sr'] for r in conflict.get('reports', []))}{refers})",
                      highlight=False, soft_wrap=True, markup=False)


@centre_app.command("read", cls=_Command)
@cli_errors
def centre_read(session: SessionArg,
                study: Annotated[str, Opt("The visit's StudyInstanceUID (its folder under SESSION/visits).", "UID",
                                          show_default=False)],
                right: Annotated[str, Opt("The right eye's grade: R0M0 … R3aM1, ICDR0 … ICDR4+DME, or U.", "GRADE",
                                          show_default=False)],
                left: Annotated[str, Opt("The left eye's grade.", "GRADE", show_default=False)],
                reader: Annotated[str, Opt("Who read it (the Verifying Observer).", "NAME", show_default=False)],
                organisation: Annotated[str, Opt("The reading centre (the Verifying Organization).", "NAME",
                                                 show_default=False)],
                reason: Annotated[Optional[str], Opt("Why the read overrules the model (needed then).",
                                                     "TEXT")] = None) -> None:
    """Keep a clinician's read of a pulled visit at the stage it waits for (a second read or arbitration as the
    centre's pathway says); `centre push` sends the final read to the PACS. Where the centre keeps accounts,
    READER is an enabled reader's account."""
    from drtrt.integration.centre import record_read

    read = record_read(session, study, {"right": right, "left": left}, reader, organisation, reason)
    overrules = " (overrules the model)" if read["overrules"] else ""
    stage = "" if read["stage"] == "primary" else f" ({read['stage']} read)"
    console.print(f"{study}: {read['words']}, read by {read['reader']}{stage}{overrules}",
                  highlight=False, soft_wrap=True, markup=False)


@centre_app.command("push", cls=_Command)
@cli_errors
def centre_push(session: SessionArg, dicomweb: UrlOpt, fhir: FhirOpt = None, timeout: TimeoutOpt = 30.0) -> None:
    """Send each read visit's VERIFIED report (a new SR in the station's series naming the station's) to the PACS,
    and with --fhir its DiagnosticReport corrected (same id); what a server confirmed before is not sent again."""
    from drtrt.integration.centre import Pacs, Server, push

    Pacs(dicomweb)
    if fhir:
        Server(fhir, "--fhir", "FHIR server")
    done = _send(lambda: push(dicomweb, session, timeout, fhir))
    console.print(f"{len(done.sent)} verified report(s) sent" + (f", {len(done.reports)} DiagnosticReport(s) "
                  "corrected" if fhir else ""), highlight=False, soft_wrap=True, markup=False)
    if done.waiting:
        console.print(f"{len(done.waiting)} read visit(s) not sent: waiting for a second read or arbitration (first: "
                      f"study {done.waiting[0]})", highlight=False, soft_wrap=True, markup=False)
    if done.conflicts:
        console.print(f"{len(done.conflicts)} read visit(s) not sent: two final results for one visit at the PACS; "
                      f"resolve it there (first: study {done.conflicts[0]})", highlight=False, soft_wrap=True,
                      markup=False)
    if done.final:
        console.print(f"{len(done.final)} centre read(s) not sent: read and verified at the station since (first: "
                      f"study {done.final[0]})", highlight=False, soft_wrap=True, markup=False)
    if done.stale:
        from drtrt.errors import SendError

        raise SendError(f"{len(done.stale)} read visit(s) not sent: the station's report changed since the read "
                        f"(first: study {done.stale[0]}); run drtrt centre list and read them again")
    if done.no_report:
        console.print(f"{len(done.no_report)} read visit(s) have no DiagnosticReport pulled from the FHIR server "
                      f"(first: study {done.no_report[0]}): run centre pull --fhir", highlight=False, soft_wrap=True,
                      markup=False)


@centre_app.command("serve", cls=_Command)
@cli_errors
def centre_serve(session: SessionArg,
                 host: Annotated[str, Opt("Address to listen on (127.0.0.1: this machine only).",
                                          "HOST")] = "127.0.0.1",
                 port: Annotated[int, Opt("Port to listen on.", "PORT")] = 8090,
                 pathway: Annotated[Optional[str], Opt("The centre's pathway: icdr, nhs or a YAML file (its reads: "
                                                       "block says second reads and the sample of negatives); kept in "
                                                       "the session for later reads.", "YAML")] = None,
                 organisation: Annotated[Optional[str], Opt("The reading centre's name (the Verifying Organization); "
                                                            "kept in the session.", "NAME")] = None,
                 dicomweb: Annotated[Optional[str], Opt("The PACS (DICOMweb base URL, as centre pull and push take "
                                                        "it): the server sends each final read there and fetches "
                                                        "new studies from it while the pages run.", "URL")] = None,
                 fhir: FhirOpt = None,
                 every: Annotated[float, Opt("With --dicomweb: seconds between tries to send and fetch (the "
                                             "queue page's buttons try at once).", "SECONDS")] = 60.0,
                 since: Annotated[Optional[str], Opt("With --dicomweb: fetch only studies of this date or later "
                                                     "(YYYYMMDD).", "DATE")] = None,
                 timeout: TimeoutOpt = 30.0) -> None:
    """The reading centre's pages in the browser: the queue by urgency, the read page (the station's pictures with
    zoom, the previous visit, the grade form), second reads and arbitration. Readers log in with the accounts kept
    in SESSION (drtrt accounts add NAME --role reader --data-dir SESSION). With --dicomweb (and --fhir) the server
    sends each final read back and fetches new studies while the pages run; without it reads go out by centre push
    once the pages stop."""
    from drtrt.errors import ConfigError
    from drtrt.station.centre_app import serve_centre

    link = None
    if dicomweb is not None:
        _check_since(since)
        link = {"dicomweb": dicomweb, "fhir": fhir, "every_s": every, "timeout": timeout, "since": since}
    elif fhir is not None or since is not None:
        raise ConfigError(f"{'--fhir' if fhir is not None else '--since'} needs --dicomweb: the PACS the pages fetch "
                          "from and send the reads to")
    serve_centre(session, host=host, port=port, pathway=pathway, organisation=organisation, link=link,
                 log=lambda line: console.print(line, highlight=False, soft_wrap=True, markup=False))
