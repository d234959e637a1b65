"""The reading centre's link to the PACS while its pages run (``drtrt centre serve --dicomweb URL``): the server
itself fetches new studies and sends the final reads, with the session store it already holds (``centre pull`` and
``centre push`` beside it would need a second lock).

A thread runs one :meth:`CentreLink.step` at the start, every ``every_s`` seconds and soon after each read is
recorded: it sends each final read the PACS has not confirmed (:func:`drtrt.integration.centre.push`, so a read
counts as sent only once the PACS confirmed it, and its UID is derived from the read: a resend is the same
instance), then keeps what is new at the PACS (:func:`~drtrt.integration.centre.pull`). The queue page's buttons
run the same halves at once (:meth:`fetch`, :meth:`send`). One lock: the loop and a button never send at the same
time. A PACS or FHIR server that cannot be reached, or refuses, is kept as :attr:`LinkState.problem` for the page
to show — never raised: the read stays kept and goes on the next try.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from drtrt.clinic.accounts import NO_LOGIN, Actor
from drtrt.clinic.store import SessionStore
from drtrt.errors import ConfigError, DrtrtError
from drtrt.integration.centre import pull, push
from drtrt.integration.pacs import Pacs, Server
from drtrt.integration.senders import Rejected, Unreachable
from drtrt.station.background import Repeating

_log = logging.getLogger("drtrt.centre")


@dataclass
class LinkState:
    """What the queue page says about the link (times: ``time.time()``)."""

    pacs: str                                       # the PACS's URL, without a password
    fhir: str | None                                # the FHIR server's, when one is given
    reached: float | None = None                    # the PACS last answered (a pull, or a confirmed send)
    tried: float | None = None                      # the last try, answered or not
    problem: str | None = None                      # why the last try failed (one line), None when it did not
    sent: int = 0                                   # reports confirmed since the server started
    added: int = 0                                  # files kept by the pulls since the server started
    stale: list[str] = field(default_factory=list)  # read studies whose station report changed since the read


class CentreLink(Repeating):
    """Fetches new studies and sends the final reads of the centre at ``session`` over ``store`` (held open)."""

    def __init__(self, store: SessionStore, session: Path, dicomweb: str, fhir: str | None = None,
                 every_s: float = 60.0, timeout: float = 30.0, since: str | None = None) -> None:
        if not every_s > 0:
            raise ConfigError(f"--every must be more than 0 seconds, found {every_s:g}")
        pacs = Pacs(dicomweb)                         # a malformed URL: refused before the pages start
        fhir_url = Server(fhir, "--fhir", "FHIR server").url if fhir else None
        self.store, self.session, self.dicomweb, self.fhir = store, session, dicomweb, fhir
        self.timeout, self.since = timeout, since
        self.state = LinkState(pacs.url, fhir_url)
        self._lock = threading.Lock()
        super().__init__("drtrt-centre-link", every_s, stop_wait_s=max(60.0, timeout * 4))

    def start(self, at_once: bool = True) -> None:
        """The loop: one step now, then every ``every_s`` seconds and after :meth:`now` (a read was recorded)."""
        super().start(at_once)

    def step(self) -> None:
        """One pass of the loop: send what is final, then fetch what is new (each tried; the first problem kept)."""
        with self._lock:
            problems = self._send(NO_LOGIN), self._fetch()
            self._tried(problems[0] or problems[1])

    def send(self, actor: Actor = NO_LOGIN) -> None:
        """Send every final read the PACS (and the FHIR server) has not confirmed; ``actor`` is audited as sender."""
        with self._lock:
            self._tried(self._send(actor))

    def fetch(self) -> None:
        """Keep every study the PACS holds that the centre does not (:func:`~drtrt.integration.centre.pull`)."""
        with self._lock:
            self._tried(self._fetch())

    def _send(self, actor: Actor) -> str | None:
        def call() -> bool:
            done = push(self.dicomweb, self.session, self.timeout, self.fhir, store=self.store, actor=actor)
            self.state.sent += len(done.sent)
            self.state.stale = done.stale
            return bool(done.sent)
        return self._try(call)

    def _fetch(self) -> str | None:
        def call() -> bool:
            self.state.added += len(pull(self.dicomweb, self.session, self.timeout, self.fhir, self.since).added)
            return True
        return self._try(call)

    def _try(self, call) -> str | None:
        """``call()`` (True: the PACS answered); what went wrong as one line, None when nothing did."""
        try:
            if call():
                self.state.reached = time.time()
            return None
        except (Unreachable, Rejected, DrtrtError) as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - never a crash: the page says what failed, the next try goes on
            _log.exception("the reading centre's link to the PACS failed")
            return f"{type(exc).__name__}: {exc}"

    def _tried(self, problem: str | None) -> None:
        self.state.problem, self.state.tried = problem, time.time()
