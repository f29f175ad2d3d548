"""What ``--help`` shows: shared ``Annotated`` option aliases (so every command spells the same option the same
way) and the examples epilog every command ends its help with.

Only ``typer`` is imported here: this module is loaded for ``steerkit --help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "BatchSizeOpt",
    "CacheDirOpt",
    "EndpointOpt",
    "ForceOpt",
    "JsonOpt",
    "MaxExamplesOpt",
    "MaxLengthOpt",
    "ModelOpt",
    "ModelRevisionOpt",
    "OfflineOpt",
    "OutOpt",
    "RevisionOpt",
    "StrictOpt",
    "TokenOpt",
    "VectorArg",
    "examples",
]


JsonOpt = Annotated[
    bool,
    typer.Option("--json", help='Print only {"data": ...} or {"error": ...} as JSON on stdout.', show_default=False),
]
VectorArg = Annotated[
    str,
    typer.Argument(help="Steering vector: a local artifact folder or a Hub repo id (user/name).", show_default=False),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model: a Hub id, a local model folder or a .gguf file \\[default: the vector's base model].",
        show_default=False,
    ),
]
RevisionOpt = Annotated[
    str | None,
    typer.Option("--revision", help="Hub revision (branch, tag or commit) of the steering vector.", show_default=False),
]
ModelRevisionOpt = Annotated[
    str | None,
    typer.Option("--model-revision", help="Hub revision of the model (when it is a Hub id).", show_default=False),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="HF_TOKEN",
        help="Hugging Face token (default: $HF_TOKEN or the logged-in token). Never printed.",
        show_default=False,
        show_envvar=False,
    ),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        envvar=["STEERKIT_HUB_ENDPOINT", "HF_ENDPOINT"],
        help="Hub URL \\[default: $STEERKIT_HUB_ENDPOINT, $HF_ENDPOINT or https://huggingface.co].",
        show_default=False,
        show_envvar=False,
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        envvar="HF_HUB_CACHE",
        help="Hub cache folder \\[default: $HF_HUB_CACHE or huggingface_hub's].",
        show_default=False,
        show_envvar=False,
    ),
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Never use the network: only local files and the cache.", show_default=False)
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder to write.", show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing --out folder.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per forward pass.")]
MaxExamplesOpt = Annotated[
    int | None,
    typer.Option("--max-examples", min=1, help="Use only the first N examples of the data.", show_default=False),
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="Model weights: float32, bfloat16, float16 (GPU only) or auto (the checkpoint's); steering maths stays "
        "float32.",
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="cpu, cuda, cuda:N, mps or auto \\[default: the CPU].", show_default=False),
]
NprocOpt = Annotated[
    int,
    typer.Option(
        "--nproc",
        min=1,
        help="Processes to run on (torch.distributed: gloo on CPU, nccl on GPUs); the result equals one process's.",
    ),
]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", min=2, help="Most tokens per example.")]
StrictOpt = Annotated[
    bool,
    typer.Option("--strict/--no-strict", help="Refuse a tokenizer that differs from the vector's (else warn)."),
]


def examples(*lines: str) -> str:
    """A ``--help`` epilog listing example invocations (one per line in the rendered help)."""
    return "[bold]Examples[/bold]\n\n" + "\n\n".join(f"  [cyan]$ {line}[/cyan]" for line in lines)
