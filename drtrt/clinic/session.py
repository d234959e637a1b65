"""A screening session: images in, durable results and reports out (``drtrt screen`` / ``drtrt watch``).

For each file: stat → read → SHA-256 → already in the store? (same path: skip; other path:
``duplicate``) → else queue it; queued images are screened ``batch_size`` at a time, their
overlay and mask PNGs written by temp-file-and-rename, and each result committed to the
store in one transaction. Killing the process at any moment loses at most the images in
flight, which the next run of the same command screens; nothing is recorded twice.

A pipeline, not a queue of stalls: while the model runs on one batch (on the caller's thread),
one helper thread decodes and preprocesses the next batch and another writes the outputs of
the batches before and commits their results, in order. In flight are therefore at most four
batches (one being prepared, one in the model, two being written) besides the queue.
Against a served model (``triton://``) ``SessionConfig.workers`` batches are prepared, sent and
answered at once (the server batches them further), and committed in order all the same.
``flush()`` (and ``close()``) returns once everything submitted is committed; ``on_row`` is
always called on the caller's thread, in the order files were settled; an error in a helper
thread is raised in the caller, after which the session takes no more work.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from drtrt.clinic.pathways import keep_pathway, load_pathway
from drtrt.clinic.patients import Assignment
from drtrt.clinic.result_files import remove_stale_temp_files, write_result_files
from drtrt.clinic.store import FileEntry, SessionRow, SessionStore
from drtrt.clinic.verdicts import provisional
from drtrt.clinic.visits import VisitBook
from drtrt.cpu import single_threaded_opencv
from drtrt.errors import ConfigError, DrtrtError
from drtrt.model_info import require_checked
from drtrt.runtime.predictor import Predictor, ScreeningResult
from drtrt.runtime.quality import QualityConfig
from drtrt.runtime.registry import is_model_url
from drtrt.task import TaskSpec
from drtrt.validation_record import validation_meta

MAX_FILE_BYTES = 256 * 2**20   # larger files are refused unread (a fundus JPEG is a few MB)
PREPARED_AHEAD = 1             # batches decoded and preprocessed while the model runs on the one before
WRITES_PENDING = 2             # screened batches waiting for the writer (bounds the arrays held)


@dataclass(frozen=True)
class SessionConfig:
    """How a session screens. backend: auto (by suffix) | ort | trt | torch. providers: ONNX
    Runtime providers, exactly as given (default cpu). batch_size: images per forward pass.
    masks: write lesion label PNGs at the original resolution. reports: write the patient and
    summary reports (session folder only). pathway: icdr | nhs | a pathway YAML file, kept by the
    session for its verdict words (None: the one the session has, icdr for a new one). workers:
    batches in flight against a served model (``triton://``): prepared, sent and answered
    concurrently, committed in order; a local model runs one batch at a time. validation: the model's
    validation record (JSON, ``docs/model-trust.md``; None: the one beside the model), counted only when
    signed by validation_key (the programme's public key, PEM; None: none counts). allow_unchecked_model:
    use a model whose check failed or never ran (:func:`~drtrt.model_info.require_checked`)."""

    backend: str = "auto"
    providers: tuple[str, ...] | None = None
    batch_size: int = 4
    masks: bool = True
    reports: bool = True
    quality: QualityConfig = QualityConfig()
    pathway: str | None = None
    workers: int = 1
    validation: str | None = None
    validation_key: str | None = None
    allow_unchecked_model: bool = False


class ScreeningSession:
    """Screens files into a session folder ``out`` (None: in memory only, nothing written).

    ``on_row`` is called with each file's SessionRow once it is settled (screened and committed,
    skipped as already done, duplicate, or unreadable), on the thread that calls submit/flush:
    a screened file's row at the first submit/flush after the writer committed it.
    """

    def __init__(self, model: str | os.PathLike, out: str | os.PathLike | None, cfg: SessionConfig = SessionConfig(),
                 command: str = "", on_row: Callable[[SessionRow], None] | None = None) -> None:
        self.out = Path(out) if out is not None else None
        self.cfg = cfg
        self.on_row = on_row
        pathway = None if cfg.pathway is None else load_pathway(cfg.pathway)    # a bad file: refused first
        if cfg.workers < 1:
            raise ConfigError(f"--workers must be at least 1, found {cfg.workers}")
        if cfg.workers > 1 and not is_model_url(model):
            raise ConfigError("--workers keeps requests in flight against a served model (triton://HOST:PORT/MODEL); "
                              "a local model runs one batch at a time: use --batch-size")
        self.predictor = Predictor(model, cfg.backend, cfg.providers, cfg.batch_size, cfg.quality)
        try:
            self.model_gate = require_checked(self.predictor.info, str(model), cfg.allow_unchecked_model)
            self.store = SessionStore(self.out / "session.db" if self.out else None)   # creates and locks out/
            if self.out is not None:
                remove_stale_temp_files(self.out)
        except BaseException:
            self.predictor.close()
            raise
        try:
            self.model_sha256 = self.predictor.runner.model_sha256()
            self.store.bind_model(self.model_sha256, self.predictor.runner.name, self.predictor.task)
            for name, value in validation_meta(model, cfg.validation, self.predictor.runner.validated_sha256(),
                                               cfg.validation_key).items():      # the record that counts, or why none
                self.store.set_meta(name, value)
            self.store.set_meta("model_gate", {**self.model_gate.to_dict(), "allowed": not self.model_gate.passed})
            if pathway is not None:
                keep_pathway(self.store, pathway)
        except BaseException:
            self.predictor.close()
            self.store.close()
            raise
        self.run_id, self.visits = self.store.begin_run(command), VisitBook(self.store)
        self._queue: list[tuple[FileEntry, bytes]] = []
        # the pipeline: batches being prepared (decode ...) → the model (caller's thread) → being written
        self._ahead: deque[tuple[list[FileEntry], Future]] = deque()
        self._writing: deque[tuple[list[FileEntry], list[FileEntry], Future]] = deque()
        self._in_flight: Counter[str] = Counter()        # SHA-256 of images handed on and not yet settled
        self._release_opencv = single_threaded_opencv()    # no OpenCV pool beside the forward pass's (issue 26)
        self._preparer = ThreadPoolExecutor(cfg.workers, thread_name_prefix="drtrt-prepare")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="drtrt-write")
        # with workers > 1 the model runs on these threads, each request to the server in flight at once
        self._requests = ThreadPoolExecutor(cfg.workers, thread_name_prefix="drtrt-request") if cfg.workers > 1 else None
        self._stop_writing = threading.Event()
        self._failed: BaseException | None = None
        self.touched_visits: set[int] = set()      # visits given a photo by this run (their reports)
        self.screened = 0                        # images run through the model (or the gate) by this run
        self.already_done = 0                    # files an earlier run of this session had screened

    def close(self) -> None:
        try:
            self.flush()
            self.store.finish_run(self.run_id)
        finally:
            self._stop_pipeline()
            self.predictor.close()
            self.store.close()

    def __enter__(self) -> "ScreeningSession":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:   # interrupted: keep what is committed, drop the queue and what is in flight, release everything
            self._queue.clear()
            self._stop_pipeline()
            self.predictor.close()
            self.store.close()

    def _stop_pipeline(self) -> None:
        """Drop the batches not yet written; wait for the image being written (its commit is whole or
        absent) and for a batch being prepared, so no helper thread outlives the store."""
        self._stop_writing.set()
        self._preparer.shutdown(wait=True, cancel_futures=True)
        if self._requests is not None:
            self._requests.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True, cancel_futures=True)
        self._ahead.clear()
        self._writing.clear()
        self._in_flight.clear()
        self._release_opencv()

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
        self._settle_written(wait=False)
        key = str(Path(path).resolve())
        assignment = self._assign(key, assignment)
        if assignment.visit is not None:
            self.touched_visits.add(assignment.visit)
        entry = FileEntry(key, None, None, None, assignment.patient, assignment.eye, "unreadable",
                          visit=assignment.visit)
        try:
            stat = os.stat(key)
            entry = replace(entry, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
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
        entry = replace(entry, sha256=sha, size=len(data), status="screened")
        if sha in self._in_flight or any(queued.sha256 == sha for queued, _ in self._queue):
            self.flush()                                   # the first copy must be recorded first
        first = self.store.image_path(sha)
        if first is None:
            self._queue.append((entry, data))
            if len(self._queue) >= self.cfg.batch_size:
                self._dispatch()
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

    def _assign(self, key: str, assignment: Assignment) -> Assignment:
        """The file's patient, eye and visit as given, a DICOM header filling what was not; a photo with a patient
        and no visit joins its DICOM study's visit, else the patient's of today (:meth:`VisitBook.visit_for`)."""
        from drtrt.preprocess.dicom import dicom_info

        info = dicom_info(Path(key))
        if info is not None:
            assignment = replace(assignment, patient=assignment.patient or info.patient_id,
                                 eye=assignment.eye or info.eye)
        if assignment.patient and assignment.visit is None:
            # the camera's study counts only when it is this patient's (a photo given to another patient
            # than its header names does not take its study along)
            study = info.study_uid if info is not None and info.patient_id in (None, assignment.patient) else None
            assignment = replace(assignment, visit=self.visits.visit_for(assignment.patient, study, path=key))
        return assignment

    def _settle_known(self, known: FileEntry, entry: FileEntry) -> None:
        """A file already in the store, unchanged: nothing to screen; record a new patient/eye/visit if given (not
        in a read visit, which stays what was read: :meth:`VisitBook.visit_for`)."""
        if (known.patient, known.eye, known.visit) != (entry.patient, entry.eye, entry.visit) \
                and (entry.patient or entry.eye) and not (known.visit and self.visits.has_reads(known.visit)):
            self.store.record_file(replace(known, patient=entry.patient, eye=entry.eye, visit=entry.visit), self.run_id)
        self.already_done += 1
        self._emit(known.path)

    def flush(self) -> None:
        """Screen everything queued and commit each result: when this returns, every file submitted
        so far is settled, committed and passed to ``on_row``."""
        if self._queue:
            self._dispatch()
        self._drain()

    def _drain(self) -> None:
        """Run the model on every batch handed on and wait until the writer has committed them all."""
        self._check_failed()
        while self._ahead:
            self._run_model()
        self._settle_written(wait=True)

    def _dispatch(self) -> None:
        """Hand the queue to the preparing thread, then run the model on the batches prepared before
        it until at most ``PREPARED_AHEAD`` wait: the next batch decodes while the model runs."""
        self._check_failed()
        queue, self._queue = self._queue, []
        entries = [entry for entry, _ in queue]
        future = self._preparer.submit(self.predictor.prepare_batch, [data for _, data in queue],
                                       self.out is not None, [entry.path for entry in entries])
        self._ahead.append((entries, future))
        self._in_flight.update(entry.sha256 for entry in entries)
        while len(self._ahead) > PREPARED_AHEAD * self.cfg.workers:
            self._run_model()

    def _run_model(self) -> None:
        """The oldest prepared batch through the model, then to the writer: on this thread, or with
        workers > 1 as a request on a request thread (the writer waits for its answer, in order)."""
        entries, future = self._ahead.popleft()
        keep = self.out is not None
        if self._requests is not None:
            results: Future | list[ScreeningResult] = self._requests.submit(
                lambda: self.predictor.infer_batch(future.result(), keep_arrays=keep))
        else:
            try:
                results = self.predictor.infer_batch(future.result(), keep_arrays=keep)
            except BaseException:
                self._forget(entries)
                raise
        while len(self._writing) >= WRITES_PENDING + self.cfg.workers - 1:
            self._settle_oldest()
        committed: list[FileEntry] = []
        self._writing.append((entries, committed, self._writer.submit(self._commit, entries, results, committed)))

    def _commit(self, entries: list[FileEntry], results: Future | list[ScreeningResult],
                committed: list[FileEntry]) -> None:
        """The writer thread: each result's files, then its row in one transaction, in order (a request
        still in flight is waited for). After an error here (or a stop) the rest are dropped, as in a
        killed run."""
        try:
            if isinstance(results, Future):
                results = results.result()
            for entry, result in zip(entries, results):
                if self._stop_writing.is_set():
                    return
                tick = time.perf_counter()
                artefacts = self._write_artefacts(result, entry)
                record = result.to_dict()
                record["timings_ms"]["write"] = round((time.perf_counter() - tick) * 1e3, 2)
                record.update(artefacts)
                with self.store.transaction():     # a read given while it was screened: it is read on its own
                    self.store.record_image(entry.sha256, record, self.visits.after_read_entry(entry), self.run_id)
                committed.append(entry)
        except BaseException:
            self._stop_writing.set()
            raise

    def _settle_written(self, wait: bool) -> None:
        """Pass the committed files to ``on_row``, oldest batch first: the finished ones, or (wait) all."""
        while self._writing and (wait or self._writing[0][2].done()):
            self._settle_oldest()

    def _settle_oldest(self) -> None:
        entries, committed, future = self._writing.popleft()
        error = future.exception()                        # waits for the batch
        self._forget(entries)
        for entry in committed:
            self.screened += 1
            self._emit(entry.path)
        if error is not None:
            self._failed = error
            raise error
        self._check_failed()

    def _forget(self, entries: list[FileEntry]) -> None:
        self._in_flight.subtract(entry.sha256 for entry in entries)
        self._in_flight = +self._in_flight                 # drops the zero counts

    def _check_failed(self) -> None:
        """After the writer failed (raised once in the caller), the session takes no more work."""
        if self._failed is not None:
            raise DrtrtError(f"this session stopped: writing a result failed ({type(self._failed).__name__}: "
                             f"{self._failed}); the images not committed are screened again by the next run") \
                from self._failed

    def _write_artefacts(self, result: ScreeningResult, entry: FileEntry) -> dict:
        """The result's files in the session folder (none in memory)."""
        if self.out is None:
            return {}
        return write_result_files(self.out, result, entry.path, entry.sha256, self.predictor.task, self.cfg.masks)

    def _emit(self, key: str) -> None:
        if self.on_row is not None:
            self.on_row(self.store.rows([key])[0])

    def write_reports(self, visits: Iterable[int] | None = None) -> dict[str, Path]:
        """Rewrite results.jsonl, the summary (CSV + HTML) and the reports of ``visits`` (default: every
        visit of the session). Returns name → path of what was written."""
        if self.out is None or not self.cfg.reports:
            return {}
        from drtrt.clinic.reports import write_session_reports

        self._drain()                                     # the batches handed on are in the reports too

        return write_session_reports(self.out, self.store.rows(), self.store.meta(), self.predictor.task, visits)


@dataclass
class ScreeningRun:
    """What :func:`screen_images` did: a row per input file (in order), the model's vocabulary,
    and how many files this run screened and how many an earlier run of the session had."""

    rows: list[SessionRow]
    task: TaskSpec
    screened: int = 0
    already_done: int = 0
    notes: list[str] = field(default_factory=list)
    provisional: bool = True                   # the session's model has no validation record


def screen_images(paths: Sequence[str | os.PathLike], model: str | os.PathLike, out: str | os.PathLike | None = None,
                  on_result: Callable[[SessionRow], None] | None = None, cfg: SessionConfig | None = None,
                  assignments: Mapping[Path, Assignment] | None = None, default: Assignment | None = None,
                  command: str = "") -> ScreeningRun:
    """Screen every path into the session folder ``out`` (None: in memory, nothing written): the loop
    behind ``drtrt screen``.

    Returns a :class:`ScreeningRun` with one :class:`~drtrt.clinic.store.SessionRow` per path, in
    order; ``on_result`` gets each row as soon as it is settled. With ``out``: ``session.db``, ``overlays/``,
    ``masks/``, ``thumbs/``, ``reports/``, ``results.jsonl``, ``summary.csv``/``.html``, ``patients.csv``.
    ``cfg``: a SessionConfig; ``assignments``: resolved path → Assignment; ``default``: the
    Assignment of paths not in ``assignments``.
    """
    with ScreeningSession(model, out, cfg or SessionConfig(), command=command, on_row=on_result) as session:
        rows = session.screen(paths, assignments, default or Assignment())
        session.flush()
        session.write_reports()
        unvalidated = provisional(session.store.meta())
    return ScreeningRun(rows, session.predictor.task, session.screened, session.already_done,
                        session.model_gate.notes(str(model)) + list(session.predictor.notes), unvalidated)
