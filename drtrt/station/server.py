"""Run the station: the worker thread plus uvicorn serving the app, stopped together."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from drtrt.station.worker import StationWorker, WorkerConfig


def serve(cfg: WorkerConfig, host: str = "127.0.0.1", port: int = 8080, pin: str | None = None,
          parity: Path | None = None, log: Callable[[str], None] = print) -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn's handlers); the worker finishes the photo in hand."""
    import uvicorn

    from drtrt.errors import ConfigError
    from drtrt.station.app import StationConfig, create_app

    worker = StationWorker(cfg)
    try:
        app = create_app(StationConfig(cfg.data_dir, pin=pin, host=host, parity=parity), worker)
        worker.start()
        where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        log(f"station serving {where} — model {cfg.model.name}, folder {cfg.data_dir}"
            + (f", camera {cfg.camera_dir}" if cfg.camera_dir else "") + " (Ctrl-C to stop)")
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                               server_header=False, timeout_graceful_shutdown=5))
        server.run()
        if not server.started:
            raise ConfigError(f"cannot serve on {host}:{port}: the port is in use or the address is not this machine's")
    finally:
        worker.stop()
        log("station stopped")
