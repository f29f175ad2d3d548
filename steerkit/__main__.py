"""``python -m steerkit``: the ``steerkit`` command (and ``torchrun --nproc-per-node N -m steerkit build ...``)."""

from steerkit_cli.app import main

main()
