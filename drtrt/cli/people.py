"""``drtrt accounts`` (the people who may log in to a station, with their roles) and ``drtrt audit`` (the
session's hash-chained trail of who did what: show it, verify it)."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from drtrt.cli.common import Flag, Opt, _Command, app, cli_errors, console

accounts_app = typer.Typer(name="accounts", rich_markup_mode=None, add_completion=False, no_args_is_help=True,
                           help="The people who log in to a station (name, role, PIN or password), kept in its "
                                "folder. A PIN is read from a prompt or stdin, never from the command line.")
audit_app = typer.Typer(name="audit", rich_markup_mode=None, add_completion=False, no_args_is_help=True,
                        help="A session's audit trail: who did what, chained by hash. `verify` finds the first "
                             "entry edited, removed or reordered.")
app.add_typer(accounts_app)
app.add_typer(audit_app)

DirOpt = Annotated[Path, Opt("Station folder (the station's --data-dir).", "DIR", "--data-dir", show_default=False)]
NameArg = Annotated[str, typer.Argument(help="The person's name, as they type it to log in.", metavar="NAME",
                                        show_default=False)]
SessionArg = Annotated[Path, typer.Argument(help="Session folder (the station's --data-dir, or screen --out).",
                                            metavar="SESSION", show_default=False)]


def _existing_folder(data_dir: Path) -> Path:
    from drtrt.errors import DataError

    if not data_dir.is_dir():
        raise DataError(f"no station folder {data_dir}: give the station's --data-dir (drtrt accounts add makes it)")
    return data_dir


def _read_secret(confirm: bool = True) -> str:
    """The PIN or password: typed twice at a terminal (not shown), else the first line of stdin."""
    from drtrt.clinic.accounts import check_secret
    from drtrt.errors import ConfigError

    if not sys.stdin.isatty():
        return check_secret(sys.stdin.readline().rstrip("\r\n"))
    secret = check_secret(getpass.getpass("PIN or password: "))
    if confirm and getpass.getpass("again: ") != secret:
        raise ConfigError("the two entries differ: nothing changed")
    return secret


@accounts_app.command("add", cls=_Command)
@cli_errors
def accounts_add(name: NameArg, data_dir: DirOpt,
                 role: Annotated[str, Opt("screener, reader (a clinician) or lead (the programme lead).",
                                          "ROLE", show_default=False)]) -> None:
    """Add a person; their PIN (at least 4 digits) or password (at least 8 characters) from the prompt or stdin."""
    from drtrt.clinic.accounts import Accounts, check_name

    accounts = Accounts(data_dir)
    accounts.add(name, role, _checked_new(accounts, name, role))
    console.print(f"added {check_name(name)} ({role}) to {accounts.path}; the station asks for a name and PIN "
                  "from its next start", highlight=False, soft_wrap=True)


def _checked_new(accounts, name: str, role: str) -> str:
    """Refuse a bad role or a name taken before asking for a PIN."""
    from drtrt.clinic.accounts import ROLES
    from drtrt.errors import ConfigError

    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if accounts.has(name):
        raise ConfigError(f"an account named {name!r} exists: choose another name, or change its PIN with "
                          "drtrt accounts passwd")
    return _read_secret()


@accounts_app.command("list", cls=_Command)
@cli_errors
def accounts_list(data_dir: DirOpt,
                  as_json: Annotated[bool, Flag("Print JSON instead of a table.", "--json")] = False) -> None:
    """Every account: name, role, when added, PIN last changed, disabled since (never a hash)."""
    from drtrt.clinic.accounts import Accounts

    rows = Accounts(_existing_folder(data_dir)).list()
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print(f"no accounts in {data_dir}: the station uses its shared PIN (--pin), or no login on "
                      "127.0.0.1", highlight=False, soft_wrap=True)
    for row in rows:
        state = f"disabled {row['disabled']}" if row["disabled"] else "active"
        typer.echo(f"{row['name']}\t{row['role']}\t{state}\tadded {row['created']}\tPIN changed {row['changed']}")


@accounts_app.command("disable", cls=_Command)
@cli_errors
def accounts_disable(name: NameArg, data_dir: DirOpt) -> None:
    """The person can no longer log in (their session ends at its next request); their name stays in the trail."""
    from drtrt.clinic.accounts import Accounts

    Accounts(_existing_folder(data_dir)).disable(name)
    console.print(f"disabled {name}", highlight=False, markup=False)


@accounts_app.command("passwd", cls=_Command)
@cli_errors
def accounts_passwd(name: NameArg, data_dir: DirOpt) -> None:
    """A new PIN or password for a person, from the prompt or stdin."""
    from drtrt.clinic.accounts import Accounts
    from drtrt.errors import ConfigError

    accounts = Accounts(_existing_folder(data_dir))
    if not accounts.has(name):                            # said before asking for a PIN
        raise ConfigError(f"no account named {name!r} (drtrt accounts list shows them)")
    accounts.passwd(name, _read_secret())
    console.print(f"changed the PIN of {name}", highlight=False, markup=False)


@audit_app.command("verify", cls=_Command)
@cli_errors
def audit_verify(session: SessionArg) -> None:
    """Check the chain: exit 0 "N entries, chain intact"; exit 1 naming the first entry edited, removed or moved."""
    from drtrt.clinic.audit import verify
    from drtrt.errors import DataError

    check = verify(session / "session.db")
    if not check.ok:
        raise DataError(f"{session}: audit trail broken at {check.summary()}")
    console.print(f"{session}: {check.summary()}", highlight=False, soft_wrap=True, markup=False)


@audit_app.command("show", cls=_Command)
@cli_errors
def audit_show(session: SessionArg,
               visit: Annotated[Optional[int], Opt("Only this visit's entries.", "N")] = None,
               as_json: Annotated[bool, Flag("Print JSON (one object per entry, with its hashes).", "--json")] = False
               ) -> None:
    """The trail, oldest first: seq, time, person, role, action, visit, patient, image, details."""
    from drtrt.clinic.audit import read_trail

    trail, _ = read_trail(session / "session.db", visit)
    if as_json:
        console.print_json(json.dumps([e.to_dict() for e in trail]))
        return
    if not trail:
        console.print("no audit entries" + (f" for visit {visit}" if visit is not None else ""), highlight=False)
    for e in trail:
        details = json.dumps(e.details, sort_keys=True, ensure_ascii=False)
        typer.echo(f"{e.seq}\t{e.time}\t{e.person} ({e.role})\t{e.action}\tvisit {e.visit or '-'}\t"
                   f"patient {e.patient or '-'}\timage {(e.image or '-')[:12]}\t{details}")
