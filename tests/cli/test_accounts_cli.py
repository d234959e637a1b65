"""``drtrt accounts``: the PIN comes from stdin or a prompt, never the command line; one-line errors."""

from __future__ import annotations

import stat

from typer.testing import CliRunner

from drtrt.cli import app
from drtrt.clinic.accounts import Accounts, Actor

runner = CliRunner()


def accounts(*args, stdin: str | None = None):
    result = runner.invoke(app, ["accounts", *map(str, args)], input=stdin)
    return result.exit_code, result.output.strip().splitlines()


def test_add_list_passwd_disable(tmp_path):
    station = tmp_path / "station"
    assert accounts("add", "Ana López", "--role", "screener", "--data-dir", station, stdin="4821\n")[0] == 0
    assert accounts("add", "Ben", "--role", "lead", "--data-dir", station, stdin="a long password\n")[0] == 0
    assert stat.S_IMODE((station / "accounts.json").stat().st_mode) == 0o600
    code, lines = accounts("list", "--data-dir", station)
    assert code == 0 and [line.split("\t")[:3] for line in lines] == [["Ana López", "screener", "active"],
                                                                       ["Ben", "lead", "active"]]
    assert accounts("passwd", "ana lópez", "--data-dir", station, stdin="7777\n")[0] == 0
    assert Accounts(station).check("Ana López", "7777") == Actor("Ana López", "screener")
    assert accounts("disable", "Ben", "--data-dir", station)[0] == 0
    assert Accounts(station).check("Ben", "a long password") is None


def test_no_option_takes_a_pin():
    for command in ("add", "passwd"):
        code, lines = accounts(command, "--help")
        assert code == 0 and "--pin" not in "\n".join(lines) and "stdin" in "\n".join(lines)


def test_mistakes_are_one_line(tmp_path):
    station = tmp_path / "station"
    cases = [(("add", "Ana", "--role", "admin", "--data-dir", station), "1234\n", "unknown role 'admin'"),
             (("add", "Ana", "--role", "lead", "--data-dir", station), "12\n", "at least 4 digits"),
             (("add", "Ana", "--role", "lead", "--data-dir", station), "1234\n", None),
             (("add", "ana", "--role", "reader", "--data-dir", station), "5678\n", "an account named 'ana' exists"),
             (("passwd", "Zoe", "--data-dir", station), "5678\n", "no account named 'Zoe'"),
             (("disable", "Zoe", "--data-dir", station), None, "no account named 'Zoe'")]
    for args, stdin, fragment in cases:
        code, lines = accounts(*args, stdin=stdin)
        if fragment is None:
            assert code == 0, lines
            continue
        assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in lines[0], lines


def test_a_station_with_accounts_refuses_a_shared_pin_and_needs_none_off_localhost(tmp_path):
    station = tmp_path / "station"
    accounts("add", "Ana", "--role", "lead", "--data-dir", station, stdin="4821\n")
    result = runner.invoke(app, ["station", "--model", str(tmp_path / "m.onnx"), "--data-dir", str(station),
                                 "--pin", "1234"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "has accounts: people log in by name" in lines[0]
    result = runner.invoke(app, ["station", "--model", str(tmp_path / "m.onnx"), "--data-dir", str(station),
                                 "--host", "0.0.0.0"])
    assert "needs" not in result.output and "not found" in result.output     # past the host check: to the model
