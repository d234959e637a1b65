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
import time
from dataclasses import dataclass
from pathlib import Path

from drtrt.station.background import Repeating

_log = logging.getLogger("drtrt.station")


@dataclass
class ForwardState:
    destinations: list[str]
    pending: int = 0
    last_pass: float | None = None
    problem: str | None = None


class Forwarder(Repeating):
    """Sends the station's results in the background (``cfg``: a SyncConfig with at least one destination);
    :meth:`now` after a finished visit."""

    def __init__(self, store, folder: Path, cfg, every_s: float = 60.0, on_change=lambda: None) -> None:
        self.store, self.folder, self.cfg, self.on_change = store, folder, cfg, on_change
        cfg.senders()                                   # a malformed URL: refused before the station starts
        self.state = ForwardState([s for s in (cfg.dicomweb, cfg.cstore, cfg.fhir) if s])
        super().__init__("drtrt-station-forward", every_s, stop_wait_s=max(60.0, cfg.timeout * 2))

    def step(self) -> None:
        """One :func:`~drtrt.integration.sync.sync_session` pass; what failed kept for the dashboard."""
        from drtrt.integration.outbox import pending_count
        from drtrt.integration.sync import sync_session

        try:
            report = sync_session(self.store, self.folder, self.cfg, once=True)
            problem = next(iter(report.unreachable.values()), None) or next(iter(report.errors.values()), None)
        except Exception as exc:  # noqa: BLE001 - keep forwarding later; the dashboard says what failed
            _log.exception("sending the station's results failed")
            problem = f"{type(exc).__name__}: {exc}"
        self.state.pending, self.state.problem = pending_count(self.store), problem
        self.state.last_pass = time.time()
        self.on_change()
