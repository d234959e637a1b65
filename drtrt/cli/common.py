"""What every command shares: the app, consoles, exit codes, one-line errors, progress bars, options.

Exit status (also in ``drtrt --help`` and the README), one code per outcome:

====  ==================================================================================
0     done
1     the command failed: a missing or unreadable file, bad data, a missing extra,
      no GPU, an unreachable server (one line on stderr says what to do)
2     usage error: an unknown option, a missing argument, a value out of range
3     screened, but not every image was graded (ungradable or unreadable ones)
4     a gate failed: parity, the precision gate of calibrate/fp16, ``bench --floor``; a
      model whose accuracy check failed or never ran (``--allow-unchecked-model``)
70    internal error: a bug in drtrt (set ``DRTRT_DEBUG=1`` for the traceback; please report it)
130   interrupted (Ctrl-C)
====  ==================================================================================
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import traceback
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from drtrt.errors import ConfigError, DrtrtError, GateError


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_ALL_GRADED = 3
    GATE_FAILED = 4
    INTERNAL = 70
    INTERRUPTED = 130


EXIT_CODES_HELP = ("Exit status: 0 done; 1 failed (a file, data, extra, GPU or server problem); 2 usage error; "
                   "3 not every image graded (or, with a patient list, given a patient); 4 a gate failed (parity, "
                   "precision, --floor, a model's accuracy check); 70 internal error "
                   "(DRTRT_DEBUG=1 shows the traceback); 130 interrupted.")

app = typer.Typer(name="drtrt", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Diabetic-retinopathy screening kit: synthesise, train, export, screen.", epilog=EXIT_CODES_HELP)
console = Console()
err = Console(stderr=True)


class _Stderr(logging.Handler):
    """The library's warnings (a Triton server the run waits for, TensorRT's messages) as plain lines on
    stderr, through the console that draws the progress bars: whatever logging a host or a test runner
    sets up, the person at the terminal reads them."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(self.format(record), markup=False, highlight=False, soft_wrap=True)


logging.getLogger("drtrt").addHandler(_Stderr(logging.WARNING))


def _version(value: bool) -> None:
    if value:
        from drtrt import __version__

        console.print(f"drtrt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, metavar="",
                                                help="Print the version and exit.")] = False) -> None:
    pass


# Top-level module → the extra that installs it (a missing one is a one-line error, not a traceback).
EXTRAS = {"torch": "train", "torchvision": "train", "sklearn": "train", "yaml": "train", "matplotlib": "report",
          "onnx": "convert", "onnxslim": "export", "starlette": "station", "uvicorn": "station", "jinja2": "station",
          "babel": "station", "multipart": "station", "python_multipart": "station", "itsdangerous": "station",
          "pydicom": "integration", "pynetdicom": "integration", "highdicom": "integration",
          "fhir": "integration", "tritonclient": "triton", "statsmodels": "study"}


def exit_code(error: DrtrtError) -> ExitCode:
    """The exit status of an error drtrt raised on purpose."""
    if isinstance(error, GateError):
        return ExitCode.GATE_FAILED
    if isinstance(error, ConfigError):
        return ExitCode.USAGE
    return ExitCode.FAILED


def fail(message: str, code: ExitCode) -> typer.Exit:
    """Print ``error: message`` on stderr; the :class:`typer.Exit` to raise with ``code``."""
    err.print(f"[red]error:[/red] {escape(for_this_install(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(int(code))


_EXTRA_HINT = re.compile(r"pip install '(drtrt\[[a-z,]+\])'")


def for_this_install(message: str) -> str:
    """``pip install 'drtrt[x]'`` advice rewritten for a source checkout (drtrt installed editable from a
    clone, as scripts/demo.sh and scripts/test.sh do): the published name would not reach the clone's
    code, ``pip install -e 'CHECKOUT[x]'`` does."""
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "pyproject.toml").is_file() or not (checkout / "drtrt" / "cli").is_dir():
        return message
    pip = checkout / ".venv" / "bin" / "pip"
    command = str(pip) if Path(sys.prefix).resolve() == (checkout / ".venv").resolve() else "pip"
    return _EXTRA_HINT.sub(lambda m: f"{command} install -e '{checkout}[{m.group(1)[6:-1]}]'", message)


class _Command(typer.core.TyperCommand):
    """Help that names an argument by its metavar alone (``IMAGES...``), as options are named by
    theirs: typer 0.2x adds the Python type (``<list[Path]>``) and braces, which say nothing to a user."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, typer.core.TyperArgument) and param.metavar:
                usage = param.metavar if param.required else f"[{param.metavar}]"
                param.display_type_rich = lambda ctx: None
                param._usage_display_name = lambda usage=usage: usage
        return params


def command(name: str | None = None, **options: Any):
    """``@app.command`` with one-line errors instead of tracebacks (:func:`cli_errors`)."""
    def register(func):
        return app.command(name, cls=_Command, **options)(cli_errors(func))
    return register



def cli_errors(func):
    """Every error a user can act on becomes one line on stderr and its exit code; a bug becomes
    one line and exit 70, with the traceback when ``DRTRT_DEBUG=1``."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise

        except DrtrtError as exc:
            raise fail(str(exc), exit_code(exc)) from None
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top not in EXTRAS:
                return _internal(exc)
            raise fail(missing_extra_message(top), ExitCode.FAILED) from None
        except KeyboardInterrupt:
            raise interrupted() from None
        except BrokenPipeError:           # `drtrt … --json | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
            raise typer.Exit(int(ExitCode.OK)) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
            return _internal(exc)

    return wrapper


def interrupted(advice: str = "") -> typer.Exit:
    """Print ``interrupted`` (and what to run to continue, when there is a way); the :class:`typer.Exit` to
    raise, exit 130."""
    err.print("interrupted" + (f"; {advice}" if advice else ""), highlight=False, soft_wrap=True, markup=False)
    return typer.Exit(int(ExitCode.INTERRUPTED))


def _internal(exc: Exception):
    """A bug: one line and exit 70; ``DRTRT_DEBUG=1`` adds the traceback above that line but keeps the
    exit status, so a script or a service that checks it behaves the same while someone debugs."""
    debug = bool(os.environ.get("DRTRT_DEBUG"))
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    raise fail(f"internal error ({type(exc).__name__}{': ' + first if first else ''}); this is a bug in drtrt: "
               + ("report it with the traceback above" if debug else
                  "run again with DRTRT_DEBUG=1 for the traceback and report it"), ExitCode.INTERNAL) from None


def missing_extra_message(module: str) -> str:
    return f"this command needs '{module}', which is not installed; pip install 'drtrt[{EXTRAS[module]}]'"


def Opt(help: str, metavar: str, *decls: str, **options: Any) -> Any:
    """An option that takes a value: ``metavar`` names it in the help (PATH, N, …)."""
    return typer.Option(*decls, help=help, metavar=metavar, **options)


def Arg(help: str, metavar: str, **options: Any) -> Any:
    """A positional argument, named ``metavar`` in the help."""
    return typer.Argument(help=help, metavar=metavar, show_default=False, **options)


def Flag(help: str, *decls: str, **options: Any) -> Any:

    """A boolean option (``--x`` or ``--x/--no-x``), shown without a type in the help."""
    return typer.Option(*decls, help=help, metavar="", **options)


AllowUncheckedOpt = Annotated[bool, Flag("Use a model whose accuracy check against its reference failed or never "
                                          "ran (refused otherwise, exit 4); every result and report then says so.",
                                          "--allow-unchecked-model")]


def progress(transient: bool = False):
    """A rich progress display on stderr (stdout stays clean for --json)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err, transient=transient)


def stage_progress(bars):
    """``on_progress(stage, done, total)`` drawing one bar per stage into ``bars`` (calibrate, fp16)."""
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total, info="")
        bars.update(tasks[stage], completed=done)

    return update


def print_json(data: Any) -> None:
    """One JSON document on stdout (NaN written as null)."""
    from drtrt.fileio import json_ready

    print(json.dumps(json_ready(data), indent=2))


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)
