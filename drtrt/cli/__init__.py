"""The ``drtrt`` command line: thin commands over the Python API, one module per command group.

:mod:`.common` holds the app, exit codes and one-line errors; :mod:`.tables` every table the
commands print. Heavy packages (torch, onnx) are imported inside the commands that need them,
so ``drtrt screen`` starts without them. The groups register their commands on import, in the
order a user meets them: data and training, artefacts, screening, evidence, the demo.
"""

from drtrt.cli import training  # noqa: F401, I001 - each module registers its commands, in this order
from drtrt.cli import models  # noqa: F401
from drtrt.cli import serving  # noqa: F401
from drtrt.cli import screening  # noqa: F401
from drtrt.cli import station  # noqa: F401
from drtrt.cli import receive  # noqa: F401
from drtrt.cli import sync  # noqa: F401
from drtrt.cli import centre  # noqa: F401
from drtrt.cli import failsafe  # noqa: F401
from drtrt.cli import people  # noqa: F401
from drtrt.cli import checks  # noqa: F401
from drtrt.cli import validate  # noqa: F401
from drtrt.cli import demo  # noqa: F401
from drtrt.cli.common import app


def main() -> None:
    app(prog_name="drtrt")


__all__ = ["app", "main"]
