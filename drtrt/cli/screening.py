"""Screening commands: ``screen`` (files and folders) and ``watch`` (a folder the camera writes into)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from drtrt.cli.common import AllowUncheckedOpt, ExitCode, Flag, Opt, command, console, err, progress, warn


ModelOpt = Annotated[Path, Opt("Model file: .onnx, .engine (TensorRT) or .pt (parity only); or a model on a "
                               "Triton server: triton://HOST:8001/NAME (gRPC), tritons://… (gRPC over TLS), "
                               "triton+http://HOST:8000/NAME.", "MODEL", show_default=False)]
PatientOpt = Annotated[Optional[str], Opt("Patient ID of these images.", "ID")]
EyeOpt = Annotated[Optional[str], Opt("left | right (also L/R, OS/OD).", "EYE")]
BackendOpt = Annotated[str, Opt("auto (by file suffix) | ort | trt | torch", "BACKEND")]
ProvidersOpt = Annotated[Optional[str], Opt("ONNX Runtime providers, e.g. cuda,cpu [default: cpu].", "LIST")]
ValidationOpt = Annotated[Optional[Path], Opt("The model's clinical validation record (JSON, docs/model-trust.md); "
                                               "it counts only for the model whose sha256 it names [default: "
                                               "MODEL.validation.json beside the model, if any].", "FILE")]
ValidationKeyOpt = Annotated[Optional[Path], Opt("The programme's public key (PEM, from drtrt validate keygen): a "
                                                  "validation record counts only when signed by it.", "PUB",
                                                  envvar="DRTRT_VALIDATION_KEY")]
WatchOpt = Annotated[str, Opt("How the camera folder is watched: auto (file-system events where they work, else "
                               "polling) | events | poll (network shares).", "MODE")]
PathwayOpt = Annotated[Optional[str], Opt("Referral pathway for the verdict words: icdr | nhs | a YAML file; the "
                                          "session keeps it [default: the session's, icdr].", "PATHWAY")]


@command()
def screen(images: Annotated[Optional[list[Path]], typer.Argument(help="Image files or folders of images.",
                                                                  metavar="IMAGES...", show_default=False)] = None,
           model: ModelOpt = ...,
           out: Annotated[Optional[Path], Opt("Session folder: database, overlays, masks, reports.", "DIR")] = None,
           as_json: Annotated[bool, Flag("One JSON object per image on stdout.", "--json")] = False,
           patient: PatientOpt = None,
           eye: EyeOpt = None,
           patients: Annotated[Optional[Path], Opt("CSV with columns file, patient, eye.", "CSV")] = None,
           recursive: Annotated[bool, Flag("Also screen the images in subfolders.", "--recursive", "-r")] = False,
           backend: BackendOpt = "auto",
           providers: ProvidersOpt = None,
           batch_size: Annotated[int, Opt("Images per forward pass.", "N")] = 4,
           workers: Annotated[int, Opt("Requests in flight against a triton:// model (an archive: 4-8).",
                                       "N")] = 1,
           pathway: PathwayOpt = None,
           validation: ValidationOpt = None,
           validation_key: ValidationKeyOpt = None,
           allow_unchecked_model: AllowUncheckedOpt = False) -> None:
    """Screen fundus photographs: grade, referable DR, lesions, per-eye and per-patient verdicts.

    With --out, a crash-safe session folder: re-run the same command after a crash to finish it.
    Exit 3 if any image was ungradable or unreadable."""
    from drtrt.cli.tables import display_names
    from drtrt.clinic.patients import list_mismatches, resolve_inputs
    from drtrt.clinic.session import screen_images
    from drtrt.runtime.photos import unsearched_images
    from drtrt.clinic.session import SessionConfig

    paths, assignments, default = resolve_inputs(images or [], patients, patient, eye, recursive)
    orphans: list[Path] = []
    if patients is not None:
        notes, orphans = list_mismatches(paths, assignments, default, patients)
        for note in notes:
            warn(note)
    if not recursive and (hidden := unsearched_images(images or [])):
        warn(f"{hidden} image(s) in subfolders were not screened; add --recursive to include them")
    cfg = SessionConfig(backend=backend, providers=tuple(providers.split(",")) if providers else None,
                        batch_size=batch_size, pathway=pathway, workers=workers,
                        validation=str(validation) if validation else None,
                        validation_key=str(validation_key) if validation_key else None,
                        allow_unchecked_model=allow_unchecked_model)
    with progress(transient=True) as bars:
        task = bars.add_task("screening", total=len(paths), info="")

        def on_result(row) -> None:
            bars.advance(task)
            if as_json:
                print(json.dumps(row.to_dict()), flush=True)

        run = screen_images(paths, model, out, cfg=cfg, assignments=assignments, default=default,
                            on_result=on_result, command=" ".join(sys.argv[1:]))
    for note in run.notes:
        warn(note)
    for row, name in zip(run.rows, display_names([r.path for r in run.rows])):
        for warning in row.warnings:
            warn(f"{name}: {warning}")

    if run.already_done:
        (err if as_json else console).print(
            f"{run.already_done} of {len(run.rows)} image(s) were screened by an earlier run of {out} and are not "
            f"screened again; {run.screened} screened now", highlight=False, soft_wrap=True)
    if not as_json:
        from drtrt.cli.tables import results_table

        from drtrt.clinic.pathways import load_pathway

        console.print(results_table(run.rows, run.task, pathway=load_pathway(pathway), provisional=run.provisional))
        if out:
            console.print(f"results in {out} (summary.html, reports/)")
    if orphans:          # a list was given and a photo has none of its patients: not done
        warn(f"not done: {len(orphans)} photo(s) have no patient")
    if orphans or any(r.status in ("ungradable", "error") for r in run.rows):
        raise typer.Exit(int(ExitCode.NOT_ALL_GRADED))


@command()
def watch(folder: Annotated[Path, typer.Argument(help="Folder the fundus camera writes into.", metavar="FOLDER",
                                                 show_default=False)],
          model: ModelOpt,
          out: Annotated[Path, Opt("Session folder (resumed when it exists).", "DIR", show_default=False)],
          patient: PatientOpt = None,
          eye: EyeOpt = None,
          patients: Annotated[Optional[Path], Opt("CSV file, patient, eye; re-read when it changes.", "CSV")] = None,
          backend: BackendOpt = "auto",
          providers: ProvidersOpt = None,
          poll: Annotated[float, Opt("Seconds between folder scans (polling).", "SECONDS")] = 0.5,
          settle: Annotated[float, Opt("Seconds a file no event announced must stay unchanged before it is read.",
                                       "SECONDS")] = 1.0,
          watch_mode: Annotated[str, Opt("How the folder is watched: auto (file-system events where they work, "
                                         "else polling) | events | poll (network shares).", "MODE",
                                         "--watch")] = "auto",
          pathway: PathwayOpt = None,
          validation: ValidationOpt = None,
          validation_key: ValidationKeyOpt = None,
          allow_unchecked_model: AllowUncheckedOpt = False) -> None:
    """Screen images as the camera writes them; one log line per image. Ctrl-C stops cleanly."""
    from drtrt.clinic.patients import Assignment, normalise_eye, validate_patient_id
    from drtrt.clinic.session import SessionConfig
    from drtrt.clinic.watch import WatchConfig, watch_folder

    cfg = WatchConfig(poll_s=poll, settle_s=settle, patients=patients, watch=watch_mode,
                      default=Assignment(validate_patient_id(patient), normalise_eye(eye)),
                      session=SessionConfig(backend=backend, batch_size=1, pathway=pathway,
                                            providers=tuple(providers.split(",")) if providers else None,
                                            validation=str(validation) if validation else None,
                                            validation_key=str(validation_key) if validation_key else None,
                                            allow_unchecked_model=allow_unchecked_model))
    watch_folder(folder, model, out, cfg, log=lambda line: console.print(line, highlight=False, soft_wrap=True,
                                                                           markup=False))
