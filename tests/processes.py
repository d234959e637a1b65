"""Child processes a test starts (`drtrt watch`, `drtrt receive`, storescu …): registered with
:func:`track`, killed after the test by the ``no_process_outlives_its_test`` fixture, so a test that
fails half-way leaves nothing running."""

from __future__ import annotations

import subprocess

RUNNING: list[subprocess.Popen] = []


def track(*procs: subprocess.Popen) -> None:
    RUNNING.extend(procs)


def kill_all() -> None:
    while RUNNING:
        proc = RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
