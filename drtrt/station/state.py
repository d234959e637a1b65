"""What the station's handlers share, kept on ``app.state.station``: the settings, the worker, the
operator PIN or the accounts, the model's facts and the page templates.

The handlers are plain module-level functions that find all of it through the request
(:func:`station_of`), so each can be read, and tested, without the app that built them.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request

from drtrt.clinic.verdicts import tone
from drtrt.model_info import ModelInfo
from drtrt.station import i18n
from drtrt.station.dashboard import local_time
from drtrt.station.forward import Forwarder
from drtrt.clinic.accounts import NO_LOGIN, Actor
from drtrt.station.security import MAX_UPLOAD_BYTES, AccountGuard, PinGuard
from drtrt.station.worker import StationWorker


@dataclass(frozen=True)
class StationConfig:
    data_dir: Path
    pin: str | None = None                 # required off loopback
    host: str = "127.0.0.1"
    parity: Path | None = None             # a `drtrt parity --json` record for the model
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    study: object | None = None            # the validation study it follows (`--study`): a station.study.StudySetup


class Templates:
    """The pages' Jinja environments, one per language: each is made on first use, with that
    language's catalog installed, so a language nobody picks costs nothing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._by_language: dict[str, Environment] = {}

    def __call__(self, language: str) -> Environment:
        if language not in self._by_language:
            env = Environment(loader=FileSystemLoader(self.folder), autoescape=select_autoescape(["html"]),
                              extensions=["jinja2.ext.i18n"])
            env.install_gettext_translations(i18n.translations(language), newstyle=True)
            env.filters["when"] = local_time
            env.globals["tr"] = functools.partial(i18n.translate, i18n.translations(language))  # runtime text
            env.globals["verdict_class"] = tone          # one mapping of verdict → colour, the reports' too
            self._by_language[language] = env
        return self._by_language[language]


@dataclass(frozen=True)
class Station:
    """One running station, as its handlers see it."""

    cfg: StationConfig
    worker: StationWorker
    forwarder: Forwarder | None            # sends results to a hospital, when one is configured
    pins: PinGuard | None                  # None: no PIN, no login (allowed on a loopback address only)
    people: AccountGuard | None            # the station folder's accounts: people log in by name (then no PIN)
    info: ModelInfo
    parity: dict | None                    # the model's parity record, when given
    templates: Templates


def station_of(request: Request) -> Station:
    """The station a request is for (:func:`drtrt.station.app.create_app` put it on ``app.state``)."""
    return request.app.state.station


def now_of(request: Request) -> dt.datetime:
    """The station's clock (aware, UTC): ``app.state.clock()`` where a test sets one, else now."""
    clock = getattr(request.app.state, "clock", None)
    return clock() if clock is not None else dt.datetime.now(dt.timezone.utc)


def actor_of(request: Request) -> Actor:
    """Who is doing this request (:class:`~.middleware.OperatorGuard` found them before the handler ran)."""
    return getattr(request.state, "actor", None) or NO_LOGIN
