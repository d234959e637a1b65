"""``drtrt station``: the screening station's web app for the health worker at the camera."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

from drtrt.cli.common import AllowUncheckedOpt, Opt, command, console
from drtrt.cli.screening import (BackendOpt, ModelOpt, PathwayOpt, ProvidersOpt, ValidationKeyOpt,
                                ValidationOpt, WatchOpt)


@command()
def station(model: ModelOpt,
            data_dir: Annotated[Path, Opt("Station folder: the session store, photos, overlays, reports.", "DIR",
                                          show_default=False)],
            camera_dir: Annotated[Optional[Path], Opt("Folder the fundus camera writes into.", "DIR")] = None,
            host: Annotated[str, Opt("Address to serve on; anything but 127.0.0.1 needs accounts or --pin.", "HOST")] = "127.0.0.1",
            port: Annotated[int, Opt("Port to serve on.", "PORT")] = 8080,
            pin: Annotated[Optional[str], Opt("Shared operator PIN (digits; or DRTRT_STATION_PIN), for a station without "
                                              "accounts (drtrt accounts). Needed off localhost then.",
                                              "PIN")] = None,
            fields: Annotated[int, Opt("Photos per eye: 1 (any field) or 2 (disc- and macula-centred).", "N")] = 1,
            parity: Annotated[Optional[Path], Opt("`drtrt parity --json` record of this model, shown on the "
                                                  "dashboard.", "FILE")] = None,
            backend: BackendOpt = "auto",
            providers: ProvidersOpt = None,
            dicomweb: Annotated[Optional[str], Opt("Send results to this PACS (DICOMweb base URL) as visits finish.",
                                                   "URL")] = None,
            fhir: Annotated[Optional[str], Opt("Send FHIR Bundles to this FHIR R4 base URL as visits finish.",
                                               "URL")] = None,
            cstore: Annotated[Optional[str], Opt("Send results by C-STORE to this DICOM storage SCP.",
                                                 "HOST:PORT")] = None,
            called_ae: Annotated[str, Opt("The PACS's AE title (C-STORE).", "AET")] = "ANY-SCP",
            sync_every: Annotated[float, Opt("Seconds between tries to send what is pending.", "SECONDS")] = 60.0,
            pathway: PathwayOpt = None,
            organisation: Annotated[Optional[str], Opt("The programme or clinic that verifies clinicians' reads: the "
                                                       "SR's verifying organisation, the FHIR report's performer.",
                                                       "NAME")] = None,
            validation: ValidationOpt = None,
            validation_key: ValidationKeyOpt = None,
            study: Annotated[Optional[Path], Opt("A registered validation-study protocol (drtrt validate register) "
                                                 "this station screens for: the programme lead's /study page "
                                                 "follows it.", "PROTOCOL")] = None,
            poll: Annotated[float, Opt("Seconds between camera-folder scans (polling).", "SECONDS")] = 0.5,
            settle: Annotated[float, Opt("Seconds a camera file no event announced must stay unchanged before it "
                                         "is read.", "SECONDS")] = 1.0,
            watch: WatchOpt = "auto",
            allow_unchecked_model: AllowUncheckedOpt = False) -> None:
    """Serve the screening station: patients, the photos each visit needs, results within seconds, reports."""
    from drtrt.clinic.accounts import Accounts
    from drtrt.clinic.session import SessionConfig
    from drtrt.errors import ConfigError
    from drtrt.clinic.visits import Protocol
    from drtrt.station.security import is_loopback
    from drtrt.station.server import serve
    from drtrt.station.worker import WorkerConfig

    pin = pin or os.environ.get("DRTRT_STATION_PIN") or None
    people = Accounts(data_dir).exist()
    if people and pin:
        raise ConfigError(f"{data_dir} has accounts: people log in by name and PIN there, not by a shared PIN; "
                          "start the station without --pin (and DRTRT_STATION_PIN)")
    if not is_loopback(host) and not pin and not people:
        raise ConfigError(f"--host {host} lets other machines reach the station: add accounts (drtrt accounts add) "
                          "or give an operator PIN with --pin (or DRTRT_STATION_PIN), or keep the default 127.0.0.1")
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be 1-65535, found {port}")
    if study is not None:                            # before the model loads: a wrong protocol is one line, now
        from drtrt.station.study import load_study

        study = load_study(study)
    worker_cfg = WorkerConfig(model=model, data_dir=data_dir, camera_dir=camera_dir, protocol=Protocol(fields),
                              poll_s=poll, settle_s=settle, watch=watch, organisation=organisation,
                              session=SessionConfig(backend=backend, batch_size=1, pathway=pathway,
                                                    providers=tuple(providers.split(",")) if providers else None,
                                                    validation=str(validation) if validation else None,
                                                    validation_key=str(validation_key) if validation_key else None,
                                                    allow_unchecked_model=allow_unchecked_model))
    sync = None
    if dicomweb or fhir or cstore:
        from drtrt.integration.sync import SyncConfig

        if not sync_every > 0:
            raise ConfigError(f"--sync-every must be more than 0 seconds, found {sync_every:g}")
        sync = SyncConfig(dicomweb=dicomweb, fhir=fhir, cstore=cstore, called_ae=called_ae)
        sync.senders()                               # a malformed URL or address: a usage error, now
    serve(worker_cfg, host=host, port=port, pin=pin, parity=parity, sync=sync, sync_every_s=sync_every,
          log=lambda line: console.print(line, highlight=False, markup=False), study=study)
