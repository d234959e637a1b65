"""The serving tests' photos; the Triton server they talk to (``triton``, ``triton_root``, ``served_repo``)
is the session's, in tests/conftest.py, shared with the runner contract (tests/runtime)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def archive(photo_root) -> list[Path]:
    """Gradable synthetic photos (512 px fields), sorted."""
    return sorted(photo_root.rglob("*.jpg"))
