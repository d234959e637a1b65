"""One background pass, again and again: the thread behind the station's store-and-forward
(:class:`~.forward.Forwarder`) and the reading centre's link to the PACS (:class:`~.centre_link.CentreLink`).

The thread runs :meth:`Repeating.step` every ``every_s`` seconds and soon after :meth:`Repeating.now` (a visit
finished, a read recorded); :meth:`Repeating.stop` wakes it and waits for the pass in hand to end, up to
``stop_wait_s``. A pass never raises out of the loop: each subclass keeps what went wrong for its page.
"""

from __future__ import annotations

import threading


class Repeating:
    """The loop; a subclass gives :meth:`step` (one pass) and calls ``super().__init__``."""

    def __init__(self, name: str, every_s: float, stop_wait_s: float) -> None:
        self.every_s, self.stop_wait_s = every_s, stop_wait_s
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def step(self) -> None:
        raise NotImplementedError

    def start(self, at_once: bool = False) -> None:
        """Start the loop; ``at_once``: its first pass now, not after ``every_s``."""
        if at_once:
            self._wake.set()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.stop_wait_s)

    def now(self) -> None:
        """Run a pass soon."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.every_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.step()
