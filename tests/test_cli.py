"""The steerkit CLI through Typer's CliRunner on tiny models: exact JSON, exit codes, one-line errors, help speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import HANG_SECONDS
from typer.testing import CliRunner

from steerkit.vector import SteeringVector
from steerkit_cli.app import app
from steerkit_cli.errors import describe_error

COMMANDS = [
    "warmstart",
    "build",
    "inspect",
    "validate",
    "generate",
    "eval",
    "tune",
    "push",
    "pull",
    "list",
    "search",
    "models",
    "demo",
]
WORDS = ["abc", "dog", "cat", "sun", "moon", "tree", "fish", "bird"]


def invoke(*args: Any, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def data_of(result: Any) -> Any:
    """The ``data`` of a successful ``--json`` run; stdout must hold exactly one JSON document."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    doc = json.loads(result.stdout)
    assert list(doc) == ["data"]
    return doc["data"]


def error_of(result: Any) -> dict[str, Any]:
    """The ``error`` of a failed ``--json`` run (exit 1, stdout exactly one JSON document)."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    doc = json.loads(result.stdout)
    assert list(doc) == ["error"]
    assert set(doc["error"]) == {"code", "message", "hint"}
    assert "\n" not in doc["error"]["message"]
    return doc["error"]


def human_error(result: Any) -> str:
    """The one-line message of a failed human-mode run (exit 1, nothing on stdout)."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr  # one line: the message never wraps
    assert "Traceback" not in result.stderr
    return errors[0]


# --- fixtures: a tiny model folder, data, an adapter and a vector made by the CLI itself ---------------------


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import tiny_llama, tiny_tokenizer

    root = tmp_path_factory.mktemp("cli")
    tiny_llama(sharpness=20).save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    tiny_llama(vocab_size=120).save_pretrained(root / "wide")
    tiny_tokenizer().save_pretrained(root / "wide")
    pairs = [{"prompt": f"{w}=", "completion": w[::-1]} for w in WORDS]
    (root / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    items = [{"prompt": f"{w}=", "choices": [w[::-1], w], "label": 0} for w in WORDS[:6]]
    (root / "test.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (root / "bad.jsonl").write_text(json.dumps(pairs[0]) + "\n" + '{"prompt": "x", "completion": \n')
    return root


@pytest.fixture(scope="session")
def warm_json(work: Path) -> dict[str, Any]:
    result = invoke(
        "warmstart", work / "model", work / "train.jsonl", "--out", work / "adapter",
        "--lr", "1e-2", "--batch-size", "4", "--seed", "3", "--json",
    )  # fmt: skip
    return data_of(result)


@pytest.fixture(scope="session")
def vector_dir(work: Path, warm_json: dict[str, Any]) -> Path:
    result = invoke(
        "build", work / "model", work / "adapter", work / "train.jsonl", "--out", work / "vec", "--batch-size", "3",
        "--json",
    )  # fmt: skip
    data = data_of(result)
    (work / "build.json").write_text(json.dumps(data))
    return work / "vec"


@pytest.fixture
def tiny(work: Path) -> tuple[Any, Any]:
    from steerkit.models import load_model

    return load_model(work / "model")


# --- help -------------------------------------------------------------------------------------------------


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); from steerkit_cli.app import app; "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'steerkit', 'huggingface_hub') if m in sys.modules]; "
        "sys.argv = ['steerkit', '--help']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', heavy, file=sys.stderr)"
    )
    times = []
    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_SECONDS)
        times.append(time.perf_counter() - start)
        assert proc.returncode == 0, proc.stderr
        assert "HEAVY []" in proc.stderr
        assert "Commands" in proc.stdout
    # its wall time is printed, never asserted: no test depends on how fast the machine is
    print(f"\nsteerkit --help wall time (python start + import + help): best {min(times):.3f} s of {times}")


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_examples(name: str) -> None:
    result = invoke(name, "--help")
    assert result.exit_code == 0
    assert "Examples" in result.stdout
    assert f"$ steerkit {name}" in result.stdout
    assert "--json" in result.stdout


def test_no_command_is_a_usage_error_exit_2() -> None:
    result = invoke("build")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert invoke("frobnicate").exit_code == 2
    assert invoke("generate", "vec", "--prompt", "x", "--max-new-tokens", "0").exit_code == 2


# --- warmstart and build: exact JSON, equal to the library ----------------------------------------------------


def test_warmstart_json_equals_library(work: Path, warm_json: dict[str, Any], tiny: tuple[Any, Any]) -> None:
    import steerkit

    model, tokenizer = tiny
    peft_model = steerkit.warm_start(model, work / "train.jsonl", tokenizer=tokenizer, lr=1e-2, batch_size=4, seed=3)
    losses = peft_model.steerkit_losses
    assert warm_json == {
        "out": str(work / "adapter"),
        "method": "lora",
        "examples": 8,
        "epochs": 1,
        "steps": 2,
        "lr": 1e-2,
        "seed": 3,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss": peft_model.steerkit_loss,
    }
    assert sorted(p.name for p in (work / "adapter").iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_build_json_and_artifact_equal_library(work: Path, vector_dir: Path, tiny: tuple[Any, Any]) -> None:
    import steerkit

    model, tokenizer = tiny
    expected = steerkit.build(model, work / "adapter", work / "train.jsonl", tokenizer=tokenizer, batch_size=3)
    data = json.loads((work / "build.json").read_text())
    assert data == {
        "out": str(vector_dir),
        "vocab_size": 99,
        "n_examples": 8,
        "n_tokens": expected.config.calibration["n_tokens"],
        "mu": expected.config.mu.to_dict(),
        "mu_static": expected.config.mu_static.to_dict(),
        "task_vector_sha256": expected.config.task_vector_sha256,
        "validation": None,  # 8 pairs: too few for 5-fold cross-validation
    }
    saved = SteeringVector.load(vector_dir)
    assert torch.equal(saved.task_vector, expected.task_vector)
    assert saved.config.mu == expected.config.mu


# --- inspect, validate ----------------------------------------------------------------------------------------


def test_inspect_json(vector_dir: Path, tiny: tuple[Any, Any]) -> None:
    _, tokenizer = tiny
    data = data_of(invoke("inspect", vector_dir, "--top", "3", "--json"))
    vector = SteeringVector.load(vector_dir)
    v = vector.task_vector
    up = [i for i in torch.topk(v, 3).indices.tolist() if v[i] > 0]
    down = [i for i in torch.topk(-v, 3).indices.tolist() if v[i] < 0]
    assert up and down
    assert data == {
        "path": str(vector_dir),
        "config": json.loads(json.dumps(vector.config.to_dict())),
        "top_promoted": [{"id": i, "token": tokenizer.decode([i]), "value": float(vector.task_vector[i])} for i in up],
        "top_suppressed": [
            {"id": i, "token": tokenizer.decode([i]), "value": float(vector.task_vector[i])} for i in down
        ],
    }


def test_inspect_human_and_plot(vector_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = invoke("inspect", vector_dir, "--top", "4", "--plot", tmp_path / "v.png")
    assert result.exit_code == 0, result.stderr
    assert "Strengths" in result.stdout
    assert (tmp_path / "v.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_shows_what_static_steering_does_to_the_logits(vector_dir: Path, tiny: tuple[Any, Any]) -> None:
    _, tokenizer = tiny
    vector = SteeringVector.load(vector_dir)
    v, mu_s = vector.task_vector, vector.mu_static
    largest = [i for i in torch.topk(v.abs(), 4).indices.tolist()]
    result = invoke("inspect", vector_dir, "--top", "4")
    assert result.exit_code == 0, result.stderr
    assert f"Static steering at μ_s = {mu_s:.4g}: the 4 largest logit shifts μ_s·v" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().endswith(("raised", "lowered"))]
    shifts = {i: mu_s * float(v[i]) for i in largest}
    expected = [
        [
            repr(tokenizer.decode([i])),
            f"{float(v[i]):+.3g}",
            f"{shifts[i]:+.3g}",
            "raised" if shifts[i] > 0 else "lowered",
        ]
        for i in largest
    ]
    assert rows == expected
    assert "revision None" not in result.stdout  # a local model has no revision: none is shown


def test_plot_without_matplotlib_is_a_clear_error(
    vector_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    err = error_of(invoke("inspect", vector_dir, "--plot", tmp_path / "v.png", "--json"))
    assert err == {
        "code": "missing_dependency",
        "message": "--plot needs the optional package matplotlib, which is not installed",
        "hint": "pip install 'steerkit[plot]'",
    }
    assert not (tmp_path / "v.png").exists()


def test_validate_json(work: Path, vector_dir: Path) -> None:
    data = data_of(invoke("validate", vector_dir, "--model", work / "model", "--json"))
    assert data == {
        "compatible": True,
        "vocab_size": 99,
        "logits_width": 99,
        "n_tokens": 99,
        "padded": False,
        "warnings": [],
    }
    # without --model, the vector's recorded base model is used
    assert data_of(invoke("validate", vector_dir, "--json")) == data


def test_wrong_vocabulary_is_exit_1_naming_both_widths(work: Path, vector_dir: Path) -> None:
    err = error_of(invoke("validate", vector_dir, "--model", work / "wide", "--json"))
    assert err["code"] == "incompatible_model"
    assert err["message"] == ("the model's logits width is 120 but the steering vector was built for vocab_size 99")
    line = human_error(invoke("generate", vector_dir, "-p", "abc=", "--model", work / "wide"))
    assert "120" in line and "99" in line


# --- generate -------------------------------------------------------------------------------------------------


def test_generate_json_equals_library(work: Path, vector_dir: Path, tiny: tuple[Any, Any]) -> None:
    from steerkit.compare import generate_settings

    data = data_of(
        invoke("generate", vector_dir, "-p", "abc=", "-p", "dog=", "--mode", "compare", "--max-new-tokens", "4",
               "--json")
    )  # fmt: skip
    model, tokenizer = tiny
    vector = SteeringVector.load(vector_dir)
    rows = generate_settings(vector, model, ["abc=", "dog="], tokenizer=tokenizer, max_new_tokens=4, num_beams=1,
                             do_sample=False)  # fmt: skip
    mu = {"dynamic": vector.mu, "static": vector.mu_static}
    assert data == {"mode": "compare", "mu": mu, "recommended": None, "outputs": rows}
    assert list(rows[0]) == ["prompt", "base", "warm", "static", "dynamic"]
    # off is the plain base model
    plain = model.generate(**tokenizer("abc=", return_tensors="pt"), max_new_tokens=4, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    assert rows[0]["base"] == tokenizer.decode(plain[0, 4:], skip_special_tokens=True)
    off = data_of(invoke("generate", vector_dir, "-p", "abc=", "--mode", "off", "--max-new-tokens", "4", "--json"))
    assert off["outputs"] == [{"prompt": "abc=", "base": rows[0]["base"]}]


def test_generate_mu_and_sampling_options(vector_dir: Path) -> None:
    args = [vector_dir, "-p", "abc=", "--max-new-tokens", "5", "--mode", "static", "--json"]
    one = data_of(invoke("generate", *args, "--mu", "0.5", "--do-sample", "--top-k", "5", "--seed", "7"))
    two = data_of(invoke("generate", *args, "--mu", "0.5", "--do-sample", "--top-k", "5", "--seed", "7"))
    assert one == two  # seeded sampling is reproducible
    assert one["mu"] == {"dynamic": 0.5, "static": 0.5}


def test_generate_human_compare_table(vector_dir: Path) -> None:
    result = invoke("generate", vector_dir, "-p", "abc=", "--mode", "compare", "--max-new-tokens", "3")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Prompt: 'abc='"
    assert lines[2].split() == ["setting", "continuation"]
    assert [line.split()[0] for line in lines[4:8]] == ["base", "warm", "static", "dynamic"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "off", "--mu", "1.0"], "--mu and --mode off are mutually exclusive: mode off does not steer"),
        (["--mode", "warm", "--mu", "1.0"], "--mu and --mode warm are mutually exclusive: mode warm does not steer"),
        (["--top-p", "0.9"], "--top-p only apply with --do-sample"),
        (["--mode", "sideways"], "unknown --mode 'sideways'"),
    ],
)
def test_generate_exclusive_options_exit_1(vector_dir: Path, args: list[str], message: str) -> None:
    err = error_of(invoke("generate", vector_dir, "-p", "abc=", *args, "--json"))
    assert err["message"] == message
    assert human_error(invoke("generate", vector_dir, "-p", "abc=", *args)) == f"Error: {message}"


def test_generate_refuses_a_beam_width_past_its_bound_before_loading_anything(vector_dir: Path) -> None:
    from steerkit_cli.commands.generate import MAX_BEAMS

    result = invoke("generate", vector_dir, "-p", "abc=", "--num-beams", "1000000")
    assert result.exit_code == 2  # a usage error: nothing is loaded, nothing allocated
    assert f"should be less than or equal to {MAX_BEAMS}" in " ".join(result.stderr.split())
    assert (
        invoke("generate", vector_dir, "-p", "abc=", "--num-beams", str(MAX_BEAMS), "--max-new-tokens", "1").exit_code
        == 0
    )


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["--do-sample", "--temperature", "0"], "--temperature 0 with --do-sample samples nothing", "greedy"),
        (["--model", "/no/such/model"], "no model folder at '/no/such/model'", "check the path"),
    ],
)
def test_foreign_errors_become_steerkits_own(vector_dir: Path, args: list[str], message: str, hint: str) -> None:
    """issue 28: these ended in transformers' or huggingface_hub's ValueError text ("Repo id must be in the form")."""
    err = error_of(invoke("generate", vector_dir, "-p", "abc=", *args, "--json"))
    assert err["message"].startswith(message) and hint in err["hint"]
    assert "ValueError" not in err["message"] and "Repo id" not in err["message"]


def test_list_with_a_cache_dir_that_is_a_file_says_so(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.write_text("x", encoding="utf-8")
    err = error_of(invoke("list", "--cache-dir", cache, "--json"))
    assert err["message"] == f"the Hub cache '{cache}' is a file, not a folder"


# --- eval and tune --------------------------------------------------------------------------------------------


def test_eval_json_equals_library(work: Path, vector_dir: Path, tiny: tuple[Any, Any]) -> None:
    from steerkit.compare import evaluate_settings

    data = data_of(invoke("eval", vector_dir, work / "test.jsonl", "--json"))
    model, tokenizer = tiny
    vector = SteeringVector.load(vector_dir)
    from steerkit.readers import load_items

    expected = evaluate_settings(vector, model, load_items(work / "test.jsonl"), tokenizer=tokenizer)
    # acc_norm is in the results, and listed among the metrics when the choices differ in length (not here)
    assert data == {
        "n": 6,
        "metrics": ["accuracy"],
        "headline": {"metric": "accuracy", "because": "every item's choices have one length"},
        "chance": 0.5,
        "results": json.loads(json.dumps(expected)),
    }
    assert list(data["results"]) == ["base", "warm", "static", "dynamic"]
    for res in data["results"].values():
        acc = res["accuracy"]
        assert acc["n"] == 6 and acc["ci_low"] <= acc["value"] <= acc["ci_high"]


def test_eval_generate_json_equals_library(work: Path, vector_dir: Path, tiny: tuple[Any, Any], tmp_path: Path) -> None:
    from steerkit.openended import evaluate_generation

    items = [{"prompt": f"{w}=", "choices": [w[::-1], w], "label": 0, "true_answers": [w[::-1]], "false_answers": [w]}
             for w in WORDS[:4]]  # fmt: skip
    (tmp_path / "open.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    args = ("eval", vector_dir, tmp_path / "open.jsonl", "--generate", "--max-new-tokens", "4", "--modes")
    data = data_of(invoke(*args, "warm,static", "--json"))
    model, tokenizer = tiny
    vector = SteeringVector.load(vector_dir)
    expected = evaluate_generation(vector, model, items, tokenizer=tokenizer, settings=["warm", "static"],
                                   max_new_tokens=4)  # fmt: skip
    assert data == json.loads(json.dumps({"n": 4, "metrics": ["bleu_acc", "rouge_acc"], "results": expected["results"],
                                          "answers": expected["answers"]}))  # fmt: skip
    err = error_of(invoke("eval", vector_dir, work / "test.jsonl", "--generate", "--json"))
    assert err["message"] == "item 0 has no reference answers for open-ended scoring"


def test_eval_modes_mu_and_table(work: Path, vector_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    data = data_of(invoke("eval", vector_dir, work / "test.jsonl", "--modes", "static", "--mu-static", "0", "--json"))
    base = data_of(invoke("eval", vector_dir, work / "test.jsonl", "--modes", "warm", "--json"))
    assert list(data["results"]) == ["static"]
    assert data["results"]["static"]["steering"] == {"mode": "static", "mu": 0.0, "filter_masked": False}
    assert data["results"]["static"]["accuracy"] == base["results"]["warm"]["accuracy"]  # μ = 0 is the warm model
    result = invoke("eval", vector_dir, work / "test.jsonl", "--modes", "base,dynamic", "--plot", tmp_path / "e.png")
    assert result.exit_code == 0, result.stderr
    rows = [line.split()[0] for line in result.stdout.splitlines() if line.split()[:1] in (["base"], ["dynamic"])]
    assert rows == ["base", "dynamic"]
    assert "Headline metric: accuracy, because every item's choices have one length." in result.stdout
    assert (tmp_path / "e.png").is_file()
    err = error_of(invoke("eval", vector_dir, work / "test.jsonl", "--modes", "base,best", "--json"))
    assert err["message"] == "unknown --modes entry 'best'"


def test_eval_names_its_headline_metric_flags_below_chance_and_a_base_recommendation(
    work: Path, vector_dir: Path, tmp_path: Path
) -> None:
    import dataclasses

    items = [{"prompt": f"{w}=", "choices": [w[::-1], w + "!!", "?"], "label": 1} for w in WORDS[:6]]
    path = tmp_path / "uneven.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    vector = SteeringVector.load(vector_dir)
    rec = {"setting": "base", "mode": None, "rule": None, "mu": 0.0}
    base = rec | {"estimate": 0.5, "delta_vs_warm": 0.1, "ci_low": 0.05, "ci_high": 0.2}
    validation = {"measure": "rank", "criterion": "rank", "unit": "example", "folds": 5, "n": 12, "seed": 0,
                  "recommended": rec, "reason": "the adapter hurts", "candidates": [base]}  # fmt: skip
    dataclasses.replace(vector, config=dataclasses.replace(vector.config, validation=validation)).save(
        tmp_path / "base-rec"
    )
    data = data_of(invoke("eval", tmp_path / "base-rec", path, "--json"))
    assert data["headline"] == {"metric": "acc_norm", "because": "the choices differ in length"}
    assert data["chance"] == pytest.approx(1 / 3) and data["metrics"] == ["accuracy", "acc_norm"]
    assert data["results"]["recommended"]["accuracy"] == data["results"]["base"]["accuracy"]
    text = invoke("eval", tmp_path / "base-rec", path).stdout
    assert "Headline metric: acc_norm, because the choices differ in length." in text
    below = [s for s, r in data["results"].items() if r["accuracy"]["value"] < 1 / 3]
    flagged = [line.split(":")[0] for line in text.splitlines() if "is below chance (0.333)" in line]
    assert flagged == below
    assert "recommended (base): acc_norm" in text
    assert "the recommendation is the base model, adapter off: the adapter hurt on the calibration data" in text


def test_tune_json_equals_library(work: Path, vector_dir: Path, tiny: tuple[Any, Any], tmp_path: Path) -> None:
    from steerkit.readers import load_items
    from steerkit.tune import search_mu

    out = tmp_path / "tuned"
    data = data_of(invoke("tune", vector_dir, work / "test.jsonl", "--out", out, "--mode", "static", "--json"))
    model, tokenizer = tiny
    vector = SteeringVector.load(vector_dir)
    items = load_items(work / "test.jsonl")
    found = search_mu(vector, model, items, tokenizer=tokenizer, metric="accuracy", mode="static")
    assert data == {
        "out": str(out),
        "mode": "static",
        "metric": "accuracy",
        "metric_because": "every item's choices have one length",
        "mu": found.best,
        "value": found.value,
        "value_at_zero": dict(found.grid)[0.0],
        "previous_mu": vector.mu_static,
        "chosen_by": "search:accuracy",
        "chosen_on": found.data_sha256,
        "n": 6,
        "validation": None,  # 6 items: too few for 5-fold cross-validation
    }
    tuned = SteeringVector.load(out)
    assert tuned.mu_static == found.best and tuned.mu == vector.mu
    assert tuned.config.mu_static.chosen_by == "search:accuracy"
    assert tuned.config.mu_static.chosen_on == found.data_sha256


def test_tune_mc2_on_plain_items_is_exit_1(work: Path, vector_dir: Path, tmp_path: Path) -> None:
    err = error_of(invoke("tune", vector_dir, work / "test.jsonl", "--out", tmp_path / "t", "--metric", "mc2",
                          "--json"))  # fmt: skip
    assert err["code"] == "invalid_option"
    assert err["message"].startswith("metric 'mc2' needs items with an MC2 set")


# --- bad inputs: exit 1 and a one-line message naming the problem ---------------------------------------------


def test_missing_data_file(work: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    err = error_of(invoke("build", work / "model", work / "adapter", missing, "--out", tmp_path / "v", "--json"))
    assert err == {"code": "data_format", "message": f"no data file at '{missing}'", "hint": "check the path"}
    assert human_error(invoke("warmstart", work / "model", missing, "--out", tmp_path / "a")) == (
        f"Error: no data file at '{missing}'"
    )


def test_missing_vector(tmp_path: Path) -> None:
    missing = tmp_path / "no-vector"
    err = error_of(invoke("inspect", missing, "--json"))
    assert err["code"] == "artifact_not_found"
    assert err["message"] == f"no steering artifact at '{missing}'"


def test_missing_model(vector_dir: Path, tmp_path: Path) -> None:
    err = error_of(invoke("validate", vector_dir, "--model", tmp_path / "absent.gguf", "--json"))
    assert err["code"] == "model_load"
    assert str(tmp_path / "absent.gguf") in err["message"]


def test_malformed_data_line(work: Path, tmp_path: Path) -> None:
    err = error_of(invoke("warmstart", work / "model", work / "bad.jsonl", "--out", tmp_path / "a", "--json"))
    assert err["code"] == "data_format"
    assert err["message"].startswith(f"'{work / 'bad.jsonl'}', line 2: not valid JSON")
    assert not (tmp_path / "a").exists()


def test_existing_out_without_force(work: Path, vector_dir: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    expected = {
        "code": "artifact_exists",
        "message": f"'{taken}' already exists and is not empty",
        "hint": "pass --force to replace it, or choose another --out",
    }
    assert error_of(invoke("warmstart", work / "model", work / "train.jsonl", "--out", taken, "--json")) == expected
    assert error_of(invoke("build", work / "model", work / "adapter", work / "train.jsonl", "--out", taken,
                           "--json")) == expected  # fmt: skip
    assert error_of(invoke("tune", vector_dir, work / "test.jsonl", "--out", taken, "--json")) == expected
    err = error_of(invoke("demo", "--out", taken, "--json"))  # refused before any model is loaded
    assert err["code"] == "artifact_exists" and str(taken) in err["message"]
    assert (taken / "keep.txt").read_text() == "mine"


def test_warmstart_force_never_replaces_a_folder_that_is_not_an_adapter(work: Path, tmp_path: Path) -> None:
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("mine")
    err = error_of(invoke("warmstart", work / "model", work / "train.jsonl", "--out", documents, "--force", "--json"))
    assert err["code"] == "artifact_exists" and "not a PEFT adapter" in err["message"]
    assert [p.name for p in documents.iterdir()] == ["thesis.txt"] and (documents / "thesis.txt").read_text() == "mine"


def test_force_replaces_an_artifact(work: Path, vector_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "v"
    args = ["build", work / "model", work / "adapter", work / "train.jsonl", "--out", out, "--max-examples", "4"]
    assert invoke(*args).exit_code == 0
    assert error_of(invoke(*args, "--json"))["code"] == "artifact_exists"
    data = data_of(invoke(*args, "--force", "--alpha", "0.2", "--json"))
    assert data["n_examples"] == 4
    assert SteeringVector.load(out).config.alpha == 0.2


def test_debug_traceback_only_with_env(tmp_path: Path) -> None:
    assert "Traceback" not in invoke("inspect", tmp_path / "x").stderr
    result = invoke("inspect", tmp_path / "x", env={"STEERKIT_DEBUG": "1"})
    assert result.exit_code == 1
    assert "Traceback" in result.stderr


def test_error_table_order() -> None:
    from steerkit.errors import ArtifactNotFoundError, RepoNotFoundError

    # a SteerkitError that is also a FileNotFoundError keeps its own code (its row comes first)
    assert describe_error(ArtifactNotFoundError("no artifact at 'x'", hint="h"))["code"] == "artifact_not_found"
    assert describe_error(RepoNotFoundError("repo 'a/b' not found"))["code"] == "repo_not_found"
    assert describe_error(FileNotFoundError(2, "No such file", "f.txt")) == {
        "code": "file_not_found",
        "message": "no such file or directory: 'f.txt'",
        "hint": "check the path",
    }
    assert describe_error(ModuleNotFoundError("No module named 'x'", name="x"))["code"] == "missing_dependency"
    assert describe_error(ValueError("bad\nsecond line"))["message"] == "ValueError: bad"
    assert describe_error(RuntimeError("boom"))["code"] == "internal_error"


# --- the Hub: push, pull, list against the fake Hub server -------------------------------------------------


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Any:
    import huggingface_hub
    from hubserver import HubServer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with HubServer() as server:
        yield server


def test_push_pull_list(hub: Any, vector_dir: Path, tmp_path: Path) -> None:
    env = {"STEERKIT_HUB_ENDPOINT": hub.endpoint, "HF_TOKEN": hub.token, "HF_HUB_CACHE": str(tmp_path / "cache")}
    assert data_of(invoke("list", "--json", env=env)) == []
    pushed = data_of(invoke("push", vector_dir, "me/vec", "--message", "first", "--json", env=env))
    head = hub.repos["me/vec"].head().oid
    assert pushed["repo_id"] == "me/vec" and pushed["revision"] == "main"
    assert pushed["commit_url"].startswith(hub.endpoint) and head in pushed["commit_url"]
    pulled = data_of(invoke("pull", "me/vec", "--to", tmp_path / "copy", "--json", env=env))
    vector = SteeringVector.load(vector_dir)
    assert pulled["path"] == str(tmp_path / "copy")
    assert pulled["repo_id"] == "me/vec" and pulled["vocab_size"] == 99 and pulled["mu"] == vector.mu
    copy = SteeringVector.load(tmp_path / "copy")
    assert torch.equal(copy.task_vector, vector.task_vector) and copy.config == vector.config
    listed = data_of(invoke("list", "--json", env=env))
    assert [(e["repo_id"], e["revision"], e["refs"]) for e in listed] == [("me/vec", pulled["commit"], ["main"])]
    assert listed[0]["path"] == pulled["cache_path"]
    # the --endpoint and --cache-dir options work as well as the environment
    opts = ["--endpoint", hub.endpoint, "--cache-dir", tmp_path / "cache2", "--token", hub.token]
    again = data_of(invoke("pull", "me/vec", *opts, "--json"))
    assert again["commit"] == pulled["commit"]
    # a vector given as a repo id loads from the Hub
    info = data_of(invoke("inspect", "me/vec", "--top", "2", *opts, "--json"))
    assert info["config"]["task_vector_sha256"] == vector.config.task_vector_sha256
    human = invoke("list", "--cache-dir", tmp_path / "cache2")
    assert "me/vec" in human.stdout and pulled["commit"][:12] in human.stdout


def test_unknown_repo_is_exit_1(hub: Any, tmp_path: Path) -> None:
    opts = ["--endpoint", hub.endpoint, "--cache-dir", tmp_path / "cache"]
    err = error_of(invoke("pull", "me/missing", *opts, "--json"))
    assert err["code"] == "repo_not_found"
    assert "me/missing" in err["message"]
    line = human_error(invoke("pull", "me/missing", *opts))
    assert "me/missing" in line


def test_closed_port_is_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = error_of(invoke("pull", "me/vec", "--endpoint", f"http://127.0.0.1:{port}", "--cache-dir", tmp_path,
                          "--json"))  # fmt: skip
    assert err["code"] == "hub_connection"
    assert "me/vec" in err["message"]


def test_push_needs_a_local_artifact(tmp_path: Path) -> None:
    err = error_of(invoke("push", tmp_path / "none", "me/vec", "--endpoint", "http://127.0.0.1:9", "--json"))
    assert err["code"] == "artifact_not_found"


# --- demo -----------------------------------------------------------------------------------------------------


def test_demo_end_to_end_on_a_tiny_model(work: Path, tmp_path: Path) -> None:
    """The demo's whole path (bundled TruthfulQA split, warm start, build, save, generations, one-pass evaluation
    with paired Δs) on a tiny model; the real model's run is measured in benchmarks/speed.py."""
    from steerkit.compare import paired_deltas

    out = tmp_path / "demo"
    args = ["demo", "--model", work / "model", "--out", out, "--max-items", "6", "--seed", "1"]
    data = data_of(invoke(*args, "--json"))
    assert (data["task"], data["metric"], data["n_train"], data["n_calibration"]) == ("truthfulqa", "mc2", 6, 6)
    vector = SteeringVector.load(out)
    assert (data["mu"], data["mu_static"]) == (vector.mu, vector.mu_static)
    evaluation = data["evaluation"]
    assert list(evaluation) == ["base", "warm", "static", "dynamic"]
    for setting, res in evaluation.items():
        assert res["n"] == 6
        for metric in ("accuracy", "mc1", "mc2"):
            m = res[metric]
            assert m["n"] == 6 and m["ci_low"] <= m["value"] <= m["ci_high"], (setting, metric)
        if setting == "warm":
            assert "delta_vs_warm" not in res
        else:
            for metric, d in res["delta_vs_warm"].items():
                assert d["n"] == 6 and d["ci_low"] <= d["difference"] <= d["ci_high"], (setting, metric)
                expected = res[metric]["value"] - evaluation["warm"][metric]["value"]
                assert d["difference"] == pytest.approx(expected, abs=1e-12)
    assert evaluation["static"]["steering"]["mu"] == vector.mu_static
    assert evaluation["dynamic"]["steering"]["mu"] == vector.mu
    assert len(data["generations"]) == 3
    for row in data["generations"]:
        assert set(row) == {"prompt", "question", "label", "base", "warm", "static", "dynamic"}
        assert row["prompt"].endswith(row["question"] + "\nA:")
        assert all("\n" not in row[s].rstrip("\n") for s in ("base", "warm", "static", "dynamic"))  # stop at \n
    assert set(data["seconds"]) == {"load", "warm-start", "build", "generate", "evaluate", "total"}
    # the human output: the eval table with its Δ columns and one plain sentence per steered setting
    human = invoke(*args, "--force")
    assert human.exit_code == 0, human.stderr
    assert "Δ mc2 vs warm" in human.stdout
    for setting in ("static", "dynamic"):
        d = evaluation[setting]["delta_vs_warm"]["mc2"]
        lead = f"{setting}: mc2 {d['difference']:+.3f} vs warm, 95% CI [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
        line = next(line for line in human.stdout.splitlines() if line.startswith(lead))
        inside = d["ci_low"] <= 0 <= d["ci_high"]
        assert ("the interval includes 0" in line) == inside
    assert paired_deltas({"mc2": [1.0, 0.0]}, {"mc2": [0.0, 0.0]})["mc2"]["difference"] == 0.5
    assert error_of(invoke("demo", "--task", "poetry", "--out", tmp_path / "x", "--json"))["message"] == (
        "unknown --task 'poetry'"
    )


# --- reliability: refusals before any work, messages in the CLI's terms, quiet libraries -----------------------


def test_generate_refuses_an_empty_prompt(vector_dir: Path) -> None:
    err = error_of(invoke("generate", vector_dir, "-p", "", "--json"))
    assert err == {
        "code": "invalid_option",
        "message": "--prompt is empty: there is no text to continue",
        "hint": 'give the text to continue, e.g. -p "Review: Lovely hotel.\\nSentiment:"',
    }
    line = human_error(invoke("generate", vector_dir, "-p", "abc=", "-p", ""))
    assert line == "Error: --prompt number 2 is empty: there is no text to continue"


def test_generate_refuses_more_new_tokens_than_the_context(vector_dir: Path) -> None:
    err = error_of(invoke("generate", vector_dir, "-p", "abc=", "--max-new-tokens", "1000000000", "--json"))
    assert err["code"] == "invalid_option"
    assert err["message"].startswith("max_new_tokens=1000000000 with a prompt of ")
    assert err["message"].endswith("tokens exceeds the model's context of 512 tokens")
    assert err["hint"].startswith("pass max_new_tokens of at most ") and "--max-new-tokens" in err["hint"]


def test_out_under_a_regular_file_says_so_before_any_work(work: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "sub" / "vec"
    err = error_of(invoke("warmstart", work / "model", work / "train.jsonl", "--out", out, "--json"))
    assert err == {
        "code": "not_a_directory",
        "message": f"cannot write '{out}': its parent '{tmp_path / 'notes.txt'}' is not a directory",
        "hint": "choose an --out whose parent folders are directories (or move that file away)",
    }
    assert "--force" not in str(err)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_library_hints_are_shown_with_the_cli_flags() -> None:
    from steerkit.errors import ArtifactExistsError, HubConnectionError, IncompatibleModelError

    assert describe_error(IncompatibleModelError("differs", hint="or pass strict=False if alike"))["hint"] == (
        "or pass --no-strict if alike"
    )
    assert describe_error(HubConnectionError("x", hint="load offline with local_files_only=True"))["hint"] == (
        "load offline with --offline"
    )
    offline = "pull it once (local_files_only=False, HF_HUB_OFFLINE unset), or pass the cache_dir=FOLDER it was in"
    assert describe_error(HubConnectionError("x", hint=offline))["hint"] == (
        "pull it once (no --offline, HF_HUB_OFFLINE unset), or pass the --cache-dir FOLDER it was in"
    )
    info = describe_error(ArtifactExistsError("even with overwrite=True", hint="pass overwrite=True (CLI: --force)"))
    assert (info["message"], info["hint"]) == ("even with --force", "pass --force")


def test_a_failing_pull_prints_only_the_error_and_the_hint(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    script = """
import sys, huggingface_hub
from huggingface_hub.utils import logging
real = huggingface_hub.snapshot_download
def noisy(*args, **kwargs):  # as huggingface_hub does when it retries a failing request
    for n in range(1, 12):
        logging.get_logger("huggingface_hub.utils._http").warning(f"Retrying in 1s [Retry {n}/5].")
    return real(*args, **kwargs)
huggingface_hub.snapshot_download = noisy
from steerkit_cli.app import app
app()
"""
    args = [sys.executable, "-c", script, "pull", "me/vec", "--endpoint", endpoint, "--cache-dir", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}
    result = subprocess.run(args, capture_output=True, text=True, timeout=HANG_SECONDS, env=env)
    assert result.returncode == 1 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line != "pulling me/vec"]  # the status line
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"Error: cannot reach the Hub at {endpoint} to download 'me/vec' (")
    assert lines[1] == (
        "Hint: check the network and the endpoint (HF_ENDPOINT); artifacts already pulled load offline with --offline"
    )
