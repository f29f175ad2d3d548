"""``python -m steerkit_cli``: the ``steerkit`` command (what ``torchrun -m steerkit_cli ...`` starts)."""

from steerkit_cli.app import main

main()
