"""Run the station: the worker thread plus uvicorn serving the app, stopped together."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path

from drtrt.errors import DrtrtError
from drtrt.station.worker import StationWorker, WorkerConfig


def serve(cfg: WorkerConfig, host: str = "127.0.0.1", port: int = 8080, pin: str | None = None,
          parity: Path | None = None, log: Callable[[str], None] = print, sync=None,
          sync_every_s: float = 60.0, study=None) -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn's handlers); the worker finishes the photo in hand.
    ``sync``: a :class:`drtrt.integration.sync.SyncConfig` to send results to a hospital as the day goes;
    ``study``: the :class:`~drtrt.station.study.StudySetup` the station follows (its /study page)."""
    from drtrt.station.app import StationConfig, create_app

    with _listen(host, port) as sock:
        worker = StationWorker(cfg, log=log)
        forwarder = None
        try:
            if sync is not None:
                from drtrt.station.forward import Forwarder

                forwarder = Forwarder(worker.store, cfg.data_dir, sync, sync_every_s, on_change=worker.changed)
            app = create_app(StationConfig(cfg.data_dir, pin=pin, host=host, parity=parity, study=study), worker,
                             forwarder)
            worker.start()
            if forwarder is not None:
                forwarder.start()
            run_app(app, sock, f"station serving {address(host, port)} — model {worker.session.predictor.runner.name}, "
                    f"folder {cfg.data_dir}" + (f", camera {cfg.camera_dir}" if cfg.camera_dir else ""), log)
        finally:
            if forwarder is not None:
                forwarder.stop()
            worker.stop()
            log("station stopped")


def address(host: str, port: int) -> str:
    """The URL a browser opens for ``host``:``port`` (an IPv6 host in brackets)."""
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def run_app(app, sock: socket.socket, serving: str, log: Callable[[str], None]) -> None:
    """Say ``serving`` and serve ``app`` on the bound ``sock`` with uvicorn until Ctrl-C / SIGTERM: no access log,
    no server header, 5 s for the open requests to finish (the station's and the reading centre's pages)."""
    import uvicorn

    log(f"{serving} (Ctrl-C to stop)")
    server = uvicorn.Server(uvicorn.Config(app, host=sock.getsockname()[0], port=sock.getsockname()[1],
                                           log_level="warning", access_log=False, server_header=False,
                                           timeout_graceful_shutdown=5))
    server.run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """The station's listening socket, bound before the model loads and before the station says it serves:
    a port in use is one line and exit 1 at once (uvicorn would log its own error after "serving" and
    exit 3, the code of an incomplete screening)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn does: a restart need not wait
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DrtrtError(f"port {port} is in use on {host}: stop what uses it (another station?) or give "
                             "another --port") from None
        raise DrtrtError(f"cannot serve on {host}:{port} ({exc.strerror or exc}): give a --host of this machine "
                         "and a --port you may use") from None
    return sock
