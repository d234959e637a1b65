"""``drtrt validate``: a local validation study — keys, the protocol's power calculation, its registration, the run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from drtrt.cli.common import Arg, ExitCode, Opt, _Command, app, cli_errors, console, err

validate_app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                           help="A local validation study: the only way a validation record is made.")
app.add_typer(validate_app, name="validate")

ProtocolArg = Annotated[Path, Arg("The study protocol (YAML, docs/model-trust.md).", "PROTOCOL")]
KeyOpt = Annotated[Optional[Path], Opt("The programme's private key (from drtrt validate keygen).", "PRIVATE")]


@validate_app.command(cls=_Command)
@cli_errors
def keygen(private: Annotated[Path, Arg("Where the private key goes (mode 0600; keep it off the stations).",
                                        "PRIVATE")],
           public: Annotated[Path, Arg("Where the public key goes (the stations' --validation-key).", "PUB")]) -> None:
    """Make the programme's Ed25519 key pair; neither file is ever overwritten."""
    from drtrt.signing import generate

    console.print(f"key {generate(private, public)}: private {private} (0600), public {public}", highlight=False)


@validate_app.command("plan", cls=_Command)
@cli_errors
def plan_(protocol: ProtocolArg) -> None:
    """Check the protocol and print its power calculation: the minimum patients and referable cases."""
    from drtrt.verify.study.protocol import load_protocol, plan

    found, sha = load_protocol(protocol)
    for line in [f"study {found.study}: {found.population}, {found.start} to {found.end}; protocol sha256 {sha}",
                 *plan(found).lines(found)]:
        console.print(line, highlight=False, soft_wrap=True)


@validate_app.command(cls=_Command)
@cli_errors
def register(protocol: ProtocolArg,
             key: Annotated[Path, Opt("The programme's private key.", "PRIVATE", show_default=False)] = ...) -> None:
    """Freeze the protocol before the study starts (PROTOCOL.registration.json, signed)."""
    from drtrt.verify.study.run import register as freeze

    console.print(f"registered: {freeze(protocol, key)}", highlight=False)


@validate_app.command(cls=_Command)
@cli_errors
def run(protocol: ProtocolArg,
        sessions: Annotated[list[Path], Opt("A session folder of the study period (repeat for more).", "DIR",
                                            show_default=False)] = ...,
        reads: Annotated[Optional[Path], Opt("The people's reads (CSV: patient_id,visit_date,reader,role,eye,grade); "
                                             "default: the clinicians' reads the sessions keep (the station's "
                                             "reader page).", "CSV", show_default=False)] = None,
        out: Annotated[Path, Opt("Folder for study.html, study.json and the record.", "DIR", show_default=False)] = ...,
        key: KeyOpt = None,
        model: Annotated[Optional[Path], Opt("The model file the sessions screened with (for a TensorRT engine: the "
                                             "ONNX it was built from): the record is also written beside it.",
                                             "MODEL")] = None) -> None:
    """Compute the study's figures; write a signed validation record only when every endpoint is cleared.
    Exit 4 when an endpoint or condition failed (no record)."""
    from drtrt.verify.study.run import run_study

    outcome = run_study(protocol, sessions, reads, out, key, model)
    for f in outcome.figures.figures.values():
        console.print(f.line(), highlight=False, soft_wrap=True)
    if outcome.record is not None:
        console.print(f"validation record written: {outcome.record} (report {out / 'study.html'})", highlight=False,
                      soft_wrap=True)
        return
    for line in outcome.report["failures"] + outcome.report["why_no_record"]:
        err.print(f"no record: {line}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(ExitCode.GATE_FAILED)
