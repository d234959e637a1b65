"""``drtrt receive``: a DICOM receiver (storage SCP) the fundus camera pushes its photos to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from drtrt.cli.common import AllowUncheckedOpt, Opt, command, console
from drtrt.cli.screening import (BackendOpt, ModelOpt, PathwayOpt, ProvidersOpt, ValidationKeyOpt,
                                ValidationOpt)


@command()
def receive(out: Annotated[Path, Opt("Session folder (resumed when it exists); received files go to DIR/incoming.",
                                     "DIR", show_default=False)],
            model: ModelOpt,
            ae_title: Annotated[str, Opt("AE title the camera calls (its 'called AE title').", "AET")] = "DRTRT",
            port: Annotated[int, Opt("TCP port to listen on.", "PORT")] = 11112,
            host: Annotated[str, Opt("Address to listen on: 127.0.0.1 this machine only, 0.0.0.0 every network.",
                                     "ADDR")] = "127.0.0.1",
            backend: BackendOpt = "auto",
            providers: ProvidersOpt = None,
            pathway: PathwayOpt = None,
            validation: ValidationOpt = None,
            validation_key: ValidationKeyOpt = None,
            allow_unchecked_model: AllowUncheckedOpt = False) -> None:
    """Receive photos the camera pushes over DICOM (C-STORE) and screen them; one log line per image.

    Accepts Ophthalmic Photography 8-bit, VL Photographic and Secondary Capture images, uncompressed
    or JPEG baseline; patient and eye from PatientID and ImageLaterality. Needs the integration
    extra. Ctrl-C stops cleanly; images received and not yet screened are screened at the next start."""
    from drtrt.integration.receive import ReceiveConfig, receive as run_receiver
    from drtrt.clinic.session import SessionConfig

    cfg = ReceiveConfig(ae_title=ae_title, host=host, port=port,
                        session=SessionConfig(backend=backend, batch_size=1, pathway=pathway,
                                              providers=tuple(providers.split(",")) if providers else None,
                                              validation=str(validation) if validation else None,
                                              validation_key=str(validation_key) if validation_key else None,
                                              allow_unchecked_model=allow_unchecked_model))
    run_receiver(model, out, cfg, log=lambda line: console.print(line, highlight=False, soft_wrap=True, markup=False))
