"""``--nproc N``: run this very command line on N processes through ``torch.distributed.run`` (torchrun).

Each process is ``python -m steerkit <the same arguments>``; torchrun sets ``RANK``/``WORLD_SIZE``, and
``steerkit_cli.app.main`` joins the process group, so the result is the one torchrun would give.
"""

from __future__ import annotations

import os
import subprocess
import sys

from steerkit_cli.errors import CliError

__all__ = ["run_on_processes", "under_torchrun"]


def under_torchrun() -> bool:
    """Whether this process is one of several that torchrun started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def run_on_processes(command: str, nproc: int) -> int:
    """Start ``nproc`` processes of this command line with torchrun; wait for them; return their exit code.

    Raises:
        CliError: The command line is not at hand (the command was not started as ``steerkit COMMAND ...``).
    """
    args = sys.argv[1:]
    if not args or args[0] != command:
        raise CliError(
            f"--nproc needs the command line of 'steerkit {command}', and this process was started otherwise",
            hint=f"run: torchrun --standalone --nproc-per-node {nproc} -m steerkit {command} ...",
        )
    args = _without_nproc(args)  # the processes run one share each; torchrun's own parser would misread it too
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    # OMP_NUM_THREADS: torchrun's own default (1 per process), said once here instead of by every process
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    return subprocess.run([*launcher, "-m", "steerkit", *args], env=env, check=False).returncode


def _without_nproc(args: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept
