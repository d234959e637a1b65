"""Store-and-forward: build what is new, queue it, send what is pending, retry what failed (``drtrt sync``).

One call of :func:`sync_session`:

1. builds the session's outputs (:func:`.export.export_session`: files under ``dicom/`` and ``fhir/``);
2. queues each object for each configured destination (:func:`.outbox.enqueue`; idempotent);
3. sends the pending items in queue order, marking each sent only once its server confirmed it
   (:mod:`.senders`), each in its own durable transaction; a failure counts an attempt and sets the next
   try ``retry_base * 2**(attempts-1)`` seconds later (at most ``retry_max``); a server that cannot be
   reached is not tried again in this pass.

``once``: one pass that tries every pending item now (backoff or not), then returns; the caller
raises when something is still pending (an unreachable server is then not logged: the caller's
error says it, in one line). Otherwise passes repeat, each trying the items that are due,
sleeping until the next is due, until nothing is pending or ``should_stop()`` says so.

With no destination at all, the outputs are built and written, and nothing is queued.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drtrt.integration import codes as C
from drtrt.integration.outputs import export_session
from drtrt.integration.outbox import defer, enqueue, items, mark_failed, mark_sent, next_due, \
    pending_count
from drtrt.integration.senders import CStoreSender, DicomWebSender, FhirSender, Rejected, Unreachable
from drtrt.clinic.store import SessionStore


@dataclass(frozen=True)
class SyncConfig:
    """Where to send (None: not there) and how to retry. ``cstore``: HOST:PORT of a DICOM storage SCP."""

    dicomweb: str | None = None
    fhir: str | None = None
    cstore: str | None = None
    ae_title: str = "DRTRT"
    called_ae: str = "ANY-SCP"
    patient_system: str = C.DEFAULT_PATIENT_SYSTEM
    timeout: float = 30.0
    retry_base: float = 5.0
    retry_max: float = 300.0

    def senders(self) -> list:
        """One sender per configured destination (raises ConfigError for a malformed URL or address)."""
        out: list = []
        if self.dicomweb:
            out.append(DicomWebSender(self.dicomweb, self.timeout))
        if self.cstore:
            out.append(CStoreSender(self.cstore, self.ae_title, self.called_ae, self.timeout))
        if self.fhir:
            out.append(FhirSender(self.fhir, self.timeout))
        return out


@dataclass
class SyncReport:
    written: list[str] = field(default_factory=list)     # files (re)built by this call
    objects: int = 0                                      # objects the session has now (all patients)
    queued: int = 0                                       # outbox rows that became pending in this call
    sent: int = 0
    failed: int = 0                                       # failed attempts in this call
    pending: int = 0                                      # still pending at the end
    unreachable: dict[str, str] = field(default_factory=dict)    # destination → last "cannot reach" message
    errors: dict[str, str] = field(default_factory=dict)         # uid → last rejection, for items still pending


def send_pass(store: SessionStore, folder: Path, senders: list, cfg: SyncConfig, report: SyncReport,
              honour_backoff: bool, log: Callable[[str], None] = lambda line: None,
              log_unreachable: bool = True) -> None:
    """Try the pending items (those due, with ``honour_backoff``), destination by destination, in queue order.
    ``log_unreachable``: log a server that cannot be reached (else only ``report.unreachable`` says it)."""
    clock = time.time()
    for sender in senders:
        todo = items(store, status="pending", destination=sender.destination,
                     due_by=clock if honour_backoff else None)
        try:
            for item in todo:
                try:
                    sender.send(folder / item.path, item.uid)
                except Unreachable as exc:
                    if log_unreachable:                   # said when it happened: the durable marks take a while
                        log(f"{sender.destination}: {exc}")
                    until = mark_failed(store, item, str(exc), cfg.retry_base, cfg.retry_max)
                    defer(store, sender.destination, until)
                    report.failed += 1
                    report.unreachable[sender.destination] = str(exc)
                    break                                   # the rest would fail the same way: next pass
                except (Rejected, OSError) as exc:             # OSError: its file is gone (the folder was pruned)
                    if isinstance(exc, OSError):
                        exc = Rejected(f"cannot read {item.path} ({exc.strerror or exc}): run drtrt sync again "
                                       "to build it, or leave the session folder's dicom/ and fhir/ alone")
                    mark_failed(store, item, str(exc), cfg.retry_base, cfg.retry_max)
                    report.failed += 1
                    report.errors[item.uid] = f"{item.kind} of patient {item.patient} to {sender.destination}: {exc}"
                    log(f"{sender.destination}: {item.kind} {item.uid} of patient {item.patient} not accepted: {exc}")
                else:
                    mark_sent(store, item)
                    report.sent += 1
                    report.errors.pop(item.uid, None)
                    report.unreachable.pop(sender.destination, None)
                    log(f"{sender.destination}: sent {item.kind} {item.uid} (patient {item.patient})")
        finally:
            sender.close()


def sync_session(store: SessionStore, folder: str | Path, cfg: SyncConfig, once: bool = True,
                 log: Callable[[str], None] = lambda line: None, sleep: Callable[[float], None] = time.sleep,
                 should_stop: Callable[[], bool] = lambda: False) -> SyncReport:
    """Build, queue and send (module docstring). Returns what happened; raises only for bad configuration."""
    folder = Path(folder)
    senders = cfg.senders()
    report = SyncReport()
    exported = export_session(store, folder, cfg.patient_system)
    report.written, report.objects = exported.written, len(exported.objects)
    for sender in senders:
        report.queued += enqueue(store, [o for o in exported.objects if o.kind in sender.kinds], [sender.destination])
    destinations = [s.destination for s in senders]
    first = True
    while True:
        send_pass(store, folder, senders, cfg, report, honour_backoff=not first, log=log, log_unreachable=not once)
        first = False
        report.pending = sum(pending_count(store, d) for d in destinations)
        if once or report.pending == 0 or should_stop():
            return report
        due = next_due(store, destinations)
        wait = max(0.0, min(cfg.retry_max, (due or time.time()) - time.time()))
        log(f"{report.pending} item(s) pending; next try in {wait:.3g} s")
        sleep(wait)
        if should_stop():
            return report
