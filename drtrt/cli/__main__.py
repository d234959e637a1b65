"""``python -m drtrt.cli`` (what ``torchrun -m drtrt.cli train …`` runs)."""

from drtrt.cli import main

main()
