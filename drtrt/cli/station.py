"""``drtrt station``: the screening station's web app for the health worker at the camera."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

from drtrt.cli.common import Opt, command, console
from drtrt.cli.screening import BackendOpt, ModelOpt, ProvidersOpt


@command()
def station(model: ModelOpt,
            data_dir: Annotated[Path, Opt("Station folder: the session store, photos, overlays, reports.", "DIR",
                                          show_default=False)],
            camera_dir: Annotated[Optional[Path], Opt("Folder the fundus camera writes into.", "DIR")] = None,
            host: Annotated[str, Opt("Address to serve on; anything but 127.0.0.1 needs --pin.", "HOST")] = "127.0.0.1",
            port: Annotated[int, Opt("Port to serve on.", "PORT")] = 8080,
            pin: Annotated[Optional[str], Opt("Operator PIN (digits; or DRTRT_STATION_PIN). Needed off localhost.",
                                              "PIN")] = None,
            fields: Annotated[int, Opt("Photos per eye: 1 (any field) or 2 (disc- and macula-centred).", "N")] = 1,
            parity: Annotated[Optional[Path], Opt("`drtrt parity --json` record of this model, shown on the "
                                                  "dashboard.", "FILE")] = None,
            backend: BackendOpt = "auto",
            providers: ProvidersOpt = None,
            poll: Annotated[float, Opt("Seconds between camera-folder scans.", "SECONDS")] = 0.5,
            settle: Annotated[float, Opt("Seconds a camera file must stop growing before it is read.",
                                         "SECONDS")] = 1.0) -> None:
    """Serve the screening station: patients, the photos each visit needs, results within seconds, reports."""
    from drtrt.errors import ConfigError
    from drtrt.runtime.session import SessionConfig
    from drtrt.runtime.visits import Protocol
    from drtrt.station.security import is_loopback
    from drtrt.station.server import serve
    from drtrt.station.worker import WorkerConfig

    pin = pin or os.environ.get("DRTRT_STATION_PIN") or None
    if not is_loopback(host) and not pin:
        raise ConfigError(f"--host {host} lets other machines reach the station: give an operator PIN with --pin "
                          "(or DRTRT_STATION_PIN), or keep the default 127.0.0.1")
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be 1-65535, found {port}")
    worker_cfg = WorkerConfig(model=model, data_dir=data_dir, camera_dir=camera_dir, protocol=Protocol(fields),
                              poll_s=poll, settle_s=settle,
                              session=SessionConfig(backend=backend, batch_size=1,
                                                    providers=tuple(providers.split(",")) if providers else None))
    serve(worker_cfg, host=host, port=port, pin=pin, parity=parity,
          log=lambda line: console.print(line, highlight=False, markup=False))
