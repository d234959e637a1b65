"""Store-and-forward from the running station: the session's results to the hospital's PACS and
FHIR server while the station serves the day (``drtrt sync`` cannot open a session the station
holds, so the station sends itself).

A thread runs one :func:`drtrt.integration.sync.sync_session` pass after each finished visit and
every ``every_s`` seconds: it builds what is new (DICOM SR and overlays, FHIR Bundles), queues it
in the session's outbox and sends what is pending; items are marked sent only once the server
confirmed them, so a clinic offline for days sends everything once the link returns. The dashboard
shows the pending count, the last pass and the last problem.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger("drtrt.station")


@dataclass
class ForwardState:
    destinations: list[str]
    pending: int = 0
    last_pass: float | None = None
    problem: str | None = None


class Forwarder:
    """Sends the station's results in the background (``cfg``: a SyncConfig with at least one destination)."""

    def __init__(self, store, folder: Path, cfg, every_s: float = 60.0, on_change=lambda: None) -> None:
        self.store, self.folder, self.cfg, self.every_s, self.on_change = store, folder, cfg, every_s, on_change
        cfg.senders()                                   # a malformed URL: refused before the station starts
        self.state = ForwardState([s for s in (cfg.dicomweb, cfg.cstore, cfg.fhir) if s])
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="drtrt-station-forward", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(60.0, self.cfg.timeout * 2))

    def now(self) -> None:
        """Send soon (a visit was finished)."""
        self._wake.set()

    def _run(self) -> None:
        from drtrt.integration.outbox import pending_count
        from drtrt.integration.sync import sync_session

        while not self._stop.is_set():
            self._wake.wait(self.every_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                report = sync_session(self.store, self.folder, self.cfg, once=True)
                problem = next(iter(report.unreachable.values()), None) or next(iter(report.errors.values()), None)
            except Exception as exc:  # noqa: BLE001 - keep forwarding later; the dashboard says what failed
                _log.exception("sending the station's results failed")
                problem = f"{type(exc).__name__}: {exc}"
            self.state.pending, self.state.problem = pending_count(self.store), problem
            self.state.last_pass = time.time()
            self.on_change()
