"""``steerkit generate``: text from a model steered by a vector (dynamic, static), unsteered, or all side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from steerkit_cli.errors import CliError, command
from steerkit_cli.options import (
    CacheDirOpt,
    DeviceOpt,
    DtypeOpt,
    EndpointOpt,
    JsonOpt,
    ModelOpt,
    ModelRevisionOpt,
    OfflineOpt,
    RevisionOpt,
    StrictOpt,
    TokenOpt,
    VectorArg,
    examples,
)
from steerkit_cli.output import Output
from steerkit_cli.render import table
from steerkit_cli.resolve import load_vector_and_model

if TYPE_CHECKING:
    from rich.console import Console

#: --mode → the settings of steerkit.demo.generate_settings it runs.
MODES: dict[str, tuple[str, ...]] = {
    "dynamic": ("dynamic",),
    "static": ("static",),
    "warm": ("warm",),
    "off": ("base",),
    "compare": ("base", "warm", "static", "dynamic"),
    "recommended": ("recommended",),
}


PromptOpt = Annotated[
    list[str],
    typer.Option("--prompt", "-p", help="Prompt text, used as given (\\n is a newline); repeat for several."),
]
ModeOpt = Annotated[
    str | None,
    typer.Option(
        help="dynamic (SVDecode), static (task vector), warm (adapter only), off (base model), compare (all "
        "four side by side), or recommended (the vector's cross-validated setting) \\[default: recommended; "
        "dynamic with --mu].",
        show_default=False,
    ),
]
MuOpt = Annotated[
    float | None,
    typer.Option(help="Steering strength \\[default: the vector's μ (dynamic) or μ_s (static)].", show_default=False),
]
MaxNewTokensOpt = Annotated[int, typer.Option(min=1, help="Tokens to generate.")]
#: The widest beam search ``generate`` runs: each beam holds a KV cache, so 10⁶ beams would ask for hundreds of GB.
MAX_BEAMS = 64
NumBeamsOpt = Annotated[
    int, typer.Option(min=1, max=MAX_BEAMS, help=f"Beam search width (1: no beam search; at most {MAX_BEAMS}).")
]
DoSampleOpt = Annotated[bool, typer.Option("--do-sample", help="Sample instead of greedy decoding.")]
TopKOpt = Annotated[
    int | None, typer.Option(min=0, help="Sampling: keep the k most likely tokens.", show_default=False)
]
TopPOpt = Annotated[
    float | None, typer.Option(min=0.0, max=1.0, help="Sampling: nucleus probability.", show_default=False)
]
TemperatureOpt = Annotated[float | None, typer.Option(min=0.0, help="Sampling temperature.", show_default=False)]
SeedOpt = Annotated[int, typer.Option(help="Seed set before each generation.")]
ChatOpt = Annotated[
    bool,
    typer.Option("--chat", help="Send each prompt as a user message through the model's chat template."),
]


@command
def generate(
    vector_spec: VectorArg,
    prompt: PromptOpt,
    model_spec: ModelOpt = None,
    mode: ModeOpt = None,
    mu: MuOpt = None,
    max_new_tokens: MaxNewTokensOpt = 40,
    num_beams: NumBeamsOpt = 1,
    do_sample: DoSampleOpt = False,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    temperature: TemperatureOpt = None,
    seed: SeedOpt = 0,
    chat: ChatOpt = False,
    strict: StrictOpt = True,
    revision: RevisionOpt = None,
    model_revision: ModelRevisionOpt = None,
    token: TokenOpt = None,
    cache_dir: CacheDirOpt = None,
    endpoint: EndpointOpt = None,
    offline: OfflineOpt = False,
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = None,
    json_output: JsonOpt = False,
    *,
    out: Output,
) -> None:
    """Generate text steered by a vector; --mode compare shows unsteered and steered outputs side by side."""
    sampling: dict[str, Any] = {"top_k": top_k, "top_p": top_p, "temperature": temperature}
    mode = mode or ("recommended" if mu is None else "dynamic")
    _check_options(mode, mu=mu, do_sample=do_sample, sampling=sampling)
    _check_prompts(prompt)
    vector, model, tokenizer = load_vector_and_model(
        out, vector_spec, model_spec, revision=revision, model_revision=model_revision, token=token,
        cache_dir=cache_dir, endpoint=endpoint, offline=offline, dtype=dtype, device=device,
    )  # fmt: skip
    from steerkit.compare import generate_settings, recommended_setting

    settings = MODES[mode]
    with out.progress() as task:
        rows = generate_settings(
            vector,
            model,
            [_prompt(p, chat=chat) for p in prompt],
            tokenizer=tokenizer,
            settings=settings,
            mu=mu,
            mu_static=mu,
            strict=strict,
            seed=seed,
            progress=lambda stage, step, total: task("generate")(step, total),
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=do_sample,
            **sampling,
        )
    rec, rec_mu, label = recommended_setting(vector)
    result = {
        "mode": mode,
        "mu": {"dynamic": vector.mu if mu is None else mu, "static": vector.mu_static if mu is None else mu},
        "recommended": {"setting": label, "mode": rec, "mu": rec_mu} if mode == "recommended" else None,
        "outputs": rows,
    }
    if mode == "recommended":
        note = (
            "steering did not help on the vector's calibration data: generating with the warm model (μ = 0)"
            if rec == "warm"
            else f"recommended setting: {label}"
        )
        out.log(note)

    out.result(result, lambda console: _render_generate(console, rows, settings))


def _prompt(text: str, *, chat: bool) -> str | list[dict[str, str]]:
    """The prompt as given (``\\n`` and ``\\t`` escapes decoded), or as one user message with ``--chat``."""
    text = text.replace("\\n", "\n").replace("\\t", "\t")
    return [{"role": "user", "content": text}] if chat else text


def _as_text(prompt: Any) -> str:
    """A prompt for display: the text, or a --chat prompt's user message."""
    return prompt if isinstance(prompt, str) else str(prompt[-1]["content"])


def _check_options(mode: str, *, mu: float | None, do_sample: bool, sampling: dict[str, Any]) -> None:
    """Refuse, before any model is loaded, an unknown --mode and options that do not go together."""
    if mode not in MODES:
        raise CliError(f"unknown --mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    if mu is not None and mode in ("off", "warm", "recommended"):
        raise CliError(
            f"--mu and --mode {mode} are mutually exclusive: mode {mode} does not steer",
            hint="drop --mu, or use --mode dynamic / static / compare",
        )
    given = [f"--{name.replace('_', '-')}" for name, value in sampling.items() if value is not None]
    if given and not do_sample:
        raise CliError(f"{', '.join(given)} only apply with --do-sample", hint="add --do-sample, or drop them")
    if sampling.get("temperature") == 0:
        raise CliError(
            "--temperature 0 with --do-sample samples nothing: the temperature must be above 0",
            hint="drop --do-sample for greedy decoding, or give a temperature such as 0.7",
        )


def _check_prompts(prompts: list[str]) -> None:
    """Refuse, before any model is loaded, an empty prompt (nothing to continue)."""
    empty = [i for i, text in enumerate(prompts, 1) if not text]
    if empty:
        which = "--prompt" if len(prompts) == 1 else f"--prompt number {', '.join(map(str, empty))}"
        raise CliError(
            f"{which} is empty: there is no text to continue",
            hint='give the text to continue, e.g. -p "Review: Lovely hotel.\\nSentiment:"',
        )


def _render_generate(console: Console, rows: list[dict[str, Any]], settings: tuple[str, ...]) -> None:
    def shown(prompt: Any) -> str:
        return prompt if isinstance(prompt, str) else _as_text(prompt) + "\n"

    if len(settings) == 1:
        for row in rows:
            console.print(f"[dim]{shown(row['prompt'])}[/]", end="")
            console.print(row[settings[0]], markup=False, highlight=False)
        return
    for row in rows:
        t = table("setting", "continuation", title=f"Prompt: {_as_text(row['prompt'])!r}")
        for s in settings:
            t.add_row(s, repr(row[s]))
        console.print(t)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command(
        "generate",
        epilog=examples(
            'steerkit generate my-vector --prompt "Review: Lovely hotel.\\nSentiment:"',
            'steerkit generate my-vector -p "Q: What is 2+2?\\nA:" --mode compare --max-new-tokens 20',
            'steerkit generate user/my-vector -p "Hello" --mode static --mu -0.5 --do-sample --top-p 0.9 --seed 1',
            'steerkit generate my-chat-vector -p "Why is the sky blue?" --chat --mode compare',
        ),
    )(generate)
