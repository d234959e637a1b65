"""A screening session: images in, durable results and reports out (``drtrt screen`` / ``drtrt watch``).

For each file: stat → read → SHA-256 → already in the store? (same path: skip; other path:
``duplicate``) → else queue it; queued images are screened ``batch_size`` at a time, their
overlay and mask PNGs written by temp-file-and-rename, and each result committed to the
store in one transaction. Killing the process at any moment loses at most the images in
flight, which the next run of the same command screens; nothing is recorded twice.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import cv2

from drtrt.fileio import atomic_write, sha256_file
from drtrt.runtime.patients import Assignment
from drtrt.runtime.postprocess import encode_label_png, lesion_mask_original, overlay
from drtrt.runtime.predictor import Predictor, ScreeningResult
from drtrt.runtime.quality import QualityConfig
from drtrt.runtime.screening import safe_stem
from drtrt.runtime.store import FileEntry, SessionRow, SessionStore

MAX_FILE_BYTES = 256 * 2**20   # larger files are refused unread (a fundus JPEG is a few MB)


@dataclass(frozen=True)
class SessionConfig:
    """How a session screens. backend: auto (by suffix) | ort | trt | torch. providers: ONNX
    Runtime providers, exactly as given (default cpu). batch_size: images per forward pass.
    masks: write lesion label PNGs at the original resolution. reports: write the patient and
    summary reports (session folder only)."""

    backend: str = "auto"
    providers: tuple[str, ...] | None = None
    batch_size: int = 4
    masks: bool = True
    reports: bool = True
    quality: QualityConfig = QualityConfig()


def _stem(path: str, sha256: str) -> str:
    """Output file stem: a file-name-safe version of the image name plus 8 hex digits of its hash."""
    return f"{safe_stem(Path(path))}-{sha256[:8]}"


class ScreeningSession:
    """Screens files into a session folder ``out`` (None: in memory only, nothing written).

    ``on_row`` is called with each file's SessionRow as soon as it is settled (screened,
    skipped as already done, duplicate, or unreadable).
    """

    def __init__(self, model: str | os.PathLike, out: str | os.PathLike | None, cfg: SessionConfig = SessionConfig(),
                 command: str = "", on_row: Callable[[SessionRow], None] | None = None) -> None:
        self.out = Path(out) if out is not None else None
        self.cfg = cfg
        self.on_row = on_row
        self.predictor = Predictor(model, cfg.backend, cfg.providers, cfg.batch_size, cfg.quality)
        try:
            self.store = SessionStore(self.out / "session.db" if self.out else None)   # creates and locks out/
            if self.out is not None:
                _remove_stale_temp_files(self.out)
        except BaseException:
            self.predictor.close()
            raise
        try:
            self.model_sha256 = sha256_file(model)
            self.store.bind_model(self.model_sha256, Path(model).name, self.predictor.task)
        except BaseException:
            self.predictor.close()
            self.store.close()
            raise
        self.run_id = self.store.begin_run(command)
        self._queue: list[tuple[FileEntry, bytes]] = []
        self.touched_patients: set[str] = set()
        self.screened = 0                        # images run through the model (or the gate) by this run
        self.already_done = 0                    # files an earlier run of this session had screened

    def close(self) -> None:
        try:
            self.flush()
            self.store.finish_run(self.run_id)
        finally:
            self.predictor.close()
            self.store.close()

    def __enter__(self) -> "ScreeningSession":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:   # interrupted: keep what is committed, drop the queue, release everything
            self._queue.clear()
            self.predictor.close()
            self.store.close()

    def screen(self, paths: Iterable[str | os.PathLike], assignments: Mapping[Path, Assignment] | None = None,
               default: Assignment = Assignment()) -> list[SessionRow]:
        """Screen ``paths`` (assignment looked up by resolved path, else ``default``); rows in input order."""
        keys = []
        for path in paths:
            resolved = Path(path).resolve()
            keys.append(str(resolved))
            self.submit(resolved, (assignments or {}).get(resolved, default))
        self.flush()
        return self.store.rows(keys)

    def submit(self, path: Path, assignment: Assignment = Assignment()) -> None:
        """Take one file: settle it now (skip, duplicate, unreadable) or queue it for the model."""
        key = str(Path(path).resolve())
        if assignment.patient:
            self.touched_patients.add(assignment.patient)
        entry = FileEntry(key, None, None, None, assignment.patient, assignment.eye, "unreadable")
        try:
            stat = os.stat(key)
            entry = FileEntry(key, None, stat.st_size, stat.st_mtime_ns, assignment.patient, assignment.eye,
                              "unreadable")
            if stat.st_size > MAX_FILE_BYTES:
                raise OSError(f"file of {stat.st_size / 2**20:.0f} MB is larger than the "
                              f"{MAX_FILE_BYTES // 2**20} MB limit for one image")
            known = self.store.file(key)
            if known and known.sha256 and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                return self._settle_known(known, entry)
            data = Path(key).read_bytes()
        except OSError as exc:
            reason = f"{Path(key).name}: cannot read the file ({exc.strerror or exc}) — copy it again"
            self.store.record_file(replace(entry, reason=reason), self.run_id)
            return self._emit(key)
        sha = hashlib.sha256(data).hexdigest()
        entry = FileEntry(key, sha, len(data), entry.mtime_ns, assignment.patient, assignment.eye, "screened")
        if any(queued.sha256 == sha for queued, _ in self._queue):
            self.flush()                                   # the first copy must be recorded first
        first = self.store.image_path(sha)
        if first is None:
            self._queue.append((entry, data))
            if len(self._queue) >= self.cfg.batch_size:
                self.flush()
        elif first == key:
            self.store.record_file(entry, self.run_id)     # same file, touched again: refresh stat/assignment
            self.already_done += 1
            self._emit(key)
        else:
            owner = self.store.file(first)
            whose = f", patient {owner.patient}" if owner and owner.patient else ""
            reason = f"same image as {Path(first).name}{whose} (already screened) — check the file or patient"
            self.store.record_file(replace(entry, status="duplicate", reason=reason, duplicate_of=first), self.run_id)
            self._emit(key)

    def _settle_known(self, known: FileEntry, entry: FileEntry) -> None:
        """A file already in the store, unchanged: nothing to screen; record a new patient/eye if given."""
        if (known.patient, known.eye) != (entry.patient, entry.eye) and (entry.patient or entry.eye):
            self.store.record_file(replace(known, patient=entry.patient, eye=entry.eye), self.run_id)
        self.already_done += 1
        self._emit(known.path)

    def flush(self) -> None:

        """Screen everything queued and commit each result."""
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        results = self.predictor.screen_batch([data for _, data in queue], keep_arrays=self.out is not None,
                                              names=[entry.path for entry, _ in queue])
        for (entry, _), result in zip(queue, results):
            tick = time.perf_counter()
            artefacts = self._write_artefacts(result, entry)
            record = result.to_dict()
            record["timings_ms"]["write"] = round((time.perf_counter() - tick) * 1e3, 2)
            record.update(artefacts)
            self.store.record_image(entry.sha256, record, entry, self.run_id)
            self.screened += 1
            self._emit(entry.path)

    def _write_artefacts(self, result: ScreeningResult, entry: FileEntry) -> dict:
        """Overlay PNG (graded), lesion mask PNG at the original resolution, thumbnail JPEG for reports."""
        written: dict = {}
        if self.out is None or result.rgb is None:
            return written
        stem = _stem(entry.path, entry.sha256)
        if result.status == "graded" and result.labels is not None:
            picture = overlay(result.rgb, result.labels, result.geometry, self.predictor.task, findings=result.lesions,
                              legend=True, disc=result.disc)
            ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
            atomic_write(self.out / "overlays" / f"{stem}.png", png.tobytes())
            written["overlay"] = f"overlays/{stem}.png"   # at the decoded scale (1/k of the original)
            written["overlay_scale"] = result.geometry.original_size[1] / picture.shape[1]
            if self.cfg.masks:
                mask, scale = lesion_mask_original(result.labels, result.geometry)
                atomic_write(self.out / "masks" / f"{stem}.png", encode_label_png(mask))
                written.update(mask=f"masks/{stem}.png", mask_scale=scale)
        else:   # ungradable: keep what the camera gave, small, for the report
            h, w = result.rgb.shape[:2]
            f = min(1.0, 900 / max(h, w))
            small = cv2.resize(result.rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
            atomic_write(self.out / "thumbs" / f"{stem}.jpg", jpg.tobytes())
            written["thumbnail"] = f"thumbs/{stem}.jpg"
        result.rgb = result.labels = None   # free the arrays once written
        return written

    def _emit(self, key: str) -> None:
        if self.on_row is not None:
            self.on_row(self.store.rows([key])[0])

    def write_reports(self, patients: Iterable[str] | None = None) -> dict[str, Path]:
        """Rewrite results.jsonl, the summary (CSV + HTML) and the reports of ``patients``
        (default: every patient of the session). Returns name → path of what was written."""
        if self.out is None or not self.cfg.reports:
            return {}
        from drtrt.runtime.report import write_session_reports

        return write_session_reports(self.out, self.store.rows(), self.store.meta(), self.predictor.task, patients)


def _remove_stale_temp_files(out: Path) -> None:
    """Temp files a killed run left behind (``.NAME.tmp-PID``); their targets are untouched."""
    for folder in (out, out / "overlays", out / "masks", out / "thumbs", out / "reports"):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)
