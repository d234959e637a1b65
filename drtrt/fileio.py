"""File helpers every stage shares: content hashes, writes that a power cut cannot tear, standard JSON, CSV
that a spreadsheet shows as text."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike, data: bytes | bytearray | memoryview | str) -> None:
    """Write ``path`` so that it holds either the old or the new content, never a torn file.

    The data goes to a temporary file beside it (``.NAME.tmp-PID``), is flushed to disk, and
    the file is renamed over the target; the folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def keep_json(path: str | os.PathLike, doc) -> None:
    """Keep ``doc`` in ``path`` as indented, key-sorted UTF-8 JSON, written atomically and only when its bytes
    change (a pull that finds nothing new writes nothing)."""
    path = Path(path)
    data = json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=True).encode()
    if not path.is_file() or path.read_bytes() != data:
        atomic_write(path, data)


def json_ready(value):
    """Replace NaN (an undefined metric) by None, recursively, so the JSON written is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def safe_cell(value):
    """A CSV cell a spreadsheet shows as text and never runs: text starting ``=``, ``+``, ``-``, ``@`` (or a tab
    or carriage return) gets a leading apostrophe, so a name typed at the station cannot become a formula."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def to_csv(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A CSV document: the header ``columns``, then ``rows``, every cell through :func:`safe_cell`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return buffer.getvalue()
