"""How ``session-35c20eb/`` was made: run with a checkout of drtrt at 35c20eb (the layout before the
schema had one owner), never with a newer one — the point is a folder an installed station of that
release left behind. ``python make_session_35c20eb.py OUT``: two patients screened (one with a
duplicate file and an unreadable one), a station visit closed with its captures and a camera file,
the NHS pathway kept, DICOM and FHIR built and queued for a server that never answered. Every one
of the ten tables holds rows. The images are the synthetic generator's (no patient data), the model
a 2-epoch width-1/16 one. Only ``session.db`` is committed (90 KB): the migration concerns it, and the
test reads none of the files its rows name.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch

from drtrt.data.synth import write_synthetic_idrid
from drtrt.integration.export import export_session
from drtrt.integration.outbox import enqueue
from drtrt.preprocess import PreprocessSpec
from drtrt.runtime.patients import Assignment
from drtrt.runtime.screening import screen_images
from drtrt.runtime.session import SessionConfig
from drtrt.runtime.store import SessionStore
from drtrt.runtime.visits import Protocol, VisitBook
from drtrt.train.checkpoint import export_checkpoint
from drtrt.train.model import ModelConfig
from drtrt.train.train_config import TrainConfig
from drtrt.train.trainer import train


def main(out: Path) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp())
    write_synthetic_idrid(work / "synth", grading=12, segmentation=6, size=256, seed=1)
    write_synthetic_idrid(work / "photos", grading=6, segmentation=0, size=512, seed=2)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.01, device="cpu",
                      model=ModelConfig(width=0.0625, batch_norm=True), preprocess=PreprocessSpec(size=64))
    train(cfg, work / "synth", work / "run", log=lambda msg: None)
    model = work / "model.onnx"
    export_checkpoint(work / "run" / "best.pt", model)

    photos = sorted((work / "photos").rglob("*.jpg"))[:4]
    shutil.copy(photos[0], work / "copy-of-first.jpg")
    (work / "broken.jpg").write_bytes(b"not a jpeg")
    assignments = {photos[0].resolve(): Assignment("P-001", "right"), photos[1].resolve(): Assignment("P-001", "left"),
                   photos[2].resolve(): Assignment("P-002", "right"),
                   (work / "copy-of-first.jpg").resolve(): Assignment("P-002", "left"),
                   (work / "broken.jpg").resolve(): Assignment("P-002", "left")}
    session = out
    screen_images([*photos[:3], work / "copy-of-first.jpg", work / "broken.jpg"], model, session,
                  cfg=SessionConfig(pathway="nhs"), assignments=assignments, command="drtrt screen (35c20eb)")

    with SessionStore(session / "session.db") as store:
        book = VisitBook(store)
        book.register("P-003", "Ana Pérez", "1961-04-02")
        visit = book.open_visit("P-003", Protocol(1))
        book.add_capture(visit, str(photos[3].resolve()), "0" * 64, "camera", "right/any")
        book.mark_camera_file(photos[3].name, photos[3].stat().st_size, 1, "0" * 64)
        book.close_visit(visit)
        result = export_session(store, session)
        enqueue(store, result.objects, ["dicomweb http://127.0.0.1:9/dicom-web"])
        print({t: store.execute(f"SELECT COUNT(*) FROM {t}")[0][0] for t in (
            "meta", "runs", "images", "files", "patients", "visits", "captures", "camera_files", "exported", "outbox")})
    shutil.rmtree(work)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
