"""``drtrt sync``: a session's results to the hospital (DICOM to a PACS, FHIR to a record system), store-and-forward."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from drtrt.cli.common import Flag, Opt, command, console, err


@command()
def sync(session: Annotated[Path, typer.Argument(help="Session folder (made by screen --out, watch or the station).",
                                                 metavar="SESSION", show_default=False)],
         dicomweb: Annotated[Optional[str], Opt("DICOMweb base URL of the PACS (STOW-RS to URL/studies), e.g. "
                                                "http://pacs:8042/dicom-web.", "URL")] = None,
         fhir: Annotated[Optional[str], Opt("FHIR R4 base URL: one transaction Bundle per patient is POSTed there. "
                                            "Without it the Bundles are only written to SESSION/fhir/.", "URL")] = None,
         cstore: Annotated[Optional[str], Opt("DICOM storage SCP to C-STORE to (instead of or beside DICOMweb).",
                                              "HOST:PORT")] = None,
         ae_title: Annotated[str, Opt("This device's AE title (C-STORE).", "AET")] = "DRTRT",
         called_ae: Annotated[str, Opt("The PACS's AE title (C-STORE).", "AET")] = "ANY-SCP",
         patient_system: Annotated[Optional[str], Opt("FHIR identifier system of the site's patient IDs "
                                                      "(default: a drtrt placeholder OID).", "URI")] = None,
         once: Annotated[bool, Flag("One pass: try every pending item now, then exit (1 if any is still "
                                    "pending). Default: keep retrying until all are sent.", "--once")] = False,
         retry_base: Annotated[float, Opt("Seconds before the first retry; doubled after each failure.",
                                          "SECONDS")] = 5.0,
         retry_max: Annotated[float, Opt("Longest wait between retries.", "SECONDS")] = 300.0,
         timeout: Annotated[float, Opt("Seconds to wait for a server's answer.", "SECONDS")] = 30.0) -> None:
    """Send a session's results: per patient a DICOM SR and the overlays (Secondary Capture) to a PACS,
    and a FHIR Bundle; each item is marked sent only when the server confirmed it.

    Items wait in the session's outbox until then: an unreachable server leaves them pending, and the
    next sync sends them (nothing is sent twice). Not while `drtrt watch` or the station uses the session."""
    from drtrt.errors import ConfigError, DataError, SendError
    from drtrt.integration.codes import DEFAULT_PATIENT_SYSTEM
    from drtrt.integration.outbox import pending_count
    from drtrt.integration.sync import SyncConfig, sync_session
    from drtrt.clinic.store import SessionStore

    if not (session / "session.db").is_file():
        raise DataError(f"{session} is not a session folder (no session.db); give the --out folder of drtrt screen "
                        "or watch, or a station session")
    for name, value in (("--retry-base", retry_base), ("--retry-max", retry_max), ("--timeout", timeout)):
        if not value > 0:
            raise ConfigError(f"{name} must be more than 0 seconds, found {value}")
    cfg = SyncConfig(dicomweb=dicomweb, fhir=fhir, cstore=cstore, ae_title=ae_title, called_ae=called_ae,
                     patient_system=patient_system or DEFAULT_PATIENT_SYSTEM, timeout=timeout,
                     retry_base=retry_base, retry_max=retry_max)
    cfg.senders()                                          # a malformed URL or address: a usage error, now

    def log(line: str) -> None:
        err.print(line, highlight=False, soft_wrap=True, markup=False)

    with SessionStore(session / "session.db") as store:
        report = sync_session(store, session, cfg, once=once, log=log)
        left = pending_count(store)
    console.print(f"{report.objects} object(s) from {session}: {len(report.written)} file(s) written, "
                  f"{report.queued} queued, {report.sent} sent, {report.pending} pending", highlight=False,
                  soft_wrap=True)
    if not (dicomweb or cstore or fhir):
        console.print(f"no server given: DICOM files in {session / 'dicom'}, FHIR Bundles in {session / 'fhir'}"
                      + (f"; {left} item(s) wait for a destination given before" if left else ""), highlight=False,
                      soft_wrap=True)
    if report.pending:
        if report.unreachable:
            first, others = next(iter(report.unreachable.values())), len(report.unreachable) - 1
            also = f" (and {others} other server{'s' if others > 1 else ''})" if others else ""
            raise SendError(f"{first}{also}; {report.pending} item(s) still pending: run drtrt sync again when "
                            "the network is back")
        first = next(iter(report.errors.values()), "not confirmed")
        raise SendError(f"{report.pending} item(s) not accepted and still pending; first: {first}")
