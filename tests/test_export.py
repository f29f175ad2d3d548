"""``steerkit export`` and steerkit.export: the static vector as ``sequence_bias`` and OpenAI-style ``logit_bias``.

Each format is read back by transformers itself (``GenerationConfig.from_pretrained`` and its
``SequenceBiasLogitsProcessor``; a bias tensor for ``logit_bias``) and the logits it gives a tiny model equal
``z + b`` with ``b`` the exported part of ``μ·v``; the CLI's JSON is the library's result; the refusal is pinned.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_decode import hand_vector
from tiny import make_vector, tiny_llama, tiny_lora, tiny_tokenizer
from typer.testing import CliRunner

from steerkit.errors import InvalidOptionError
from steerkit.export import LOGIT_BIAS_LIMIT, export_bias
from steerkit.vector import SteeringVector
from steerkit_cli.app import app


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny warm model, its tokenizer, a hand-built vector (saved) and the warm logits of a short prompt."""
    tokenizer = tiny_tokenizer()
    warm = tiny_lora(tiny_llama(sharpness=20))
    vector = hand_vector(warm, tokenizer)
    folder = tmp_path_factory.mktemp("export") / "vector"
    vector.save(folder)
    ids = torch.tensor([tokenizer.encode("the cat sat")])
    with torch.no_grad():
        scores = warm(ids).logits[:, -1].float()
    return {"vector": vector, "folder": folder, "ids": ids, "scores": scores}


def expected(vector: SteeringVector, scores: torch.Tensor, mu: float, ids: list[int], clamp: bool) -> torch.Tensor:
    """``z + b``: the exported entries of ``μ·v`` (clamped to ±100 for logit_bias) added to the scores."""
    b = vector.task_vector * mu
    if clamp:
        b = b.clamp(-LOGIT_BIAS_LIMIT, LOGIT_BIAS_LIMIT)
    out = scores.clone()
    out[:, ids] += b[ids]
    return out


def test_sequence_bias_is_read_by_transformers_and_adds_the_bias(setting: dict[str, Any], tmp_path: Path) -> None:
    from transformers import GenerationConfig
    from transformers.generation.logits_process import SequenceBiasLogitsProcessor

    vector, mu = setting["vector"], -40.0
    export = export_bias(vector, "sequence-bias", mu=mu)
    assert export.nonzero == int((vector.task_vector != 0).sum()) == len(export.bias)  # default: every entry
    assert export.l1_fraction == pytest.approx(1.0)
    written = export.write(tmp_path)
    assert written == tmp_path / "generation_config.json"
    config = GenerationConfig.from_pretrained(tmp_path)
    processor = SequenceBiasLogitsProcessor(sequence_bias=config.sequence_bias)
    got = processor(setting["ids"], setting["scores"].clone())
    torch.testing.assert_close(got, expected(vector, setting["scores"], mu, list(export.bias), clamp=False))

    top = export_bias(vector, "sequence-bias", mu=mu, top_k=5, force=True)
    assert len(top.bias) == 5
    assert [abs(b) for b in top.bias.values()] == sorted((abs(b) for b in top.bias.values()), reverse=True)
    assert min(map(abs, top.bias.values())) >= float((vector.task_vector * mu).abs().sort().values[-5])


def test_logit_bias_is_openai_shaped_clamped_and_adds_the_bias(setting: dict[str, Any], tmp_path: Path) -> None:
    vector, mu = setting["vector"], -4000.0  # large enough that some entries clamp at ±100
    export = export_bias(vector, "logit-bias", mu=mu, force=True)
    assert export.clamped > 0 and export.l1_fraction < 1.0
    payload = json.loads(export.write(tmp_path / "bias.json").read_text(encoding="utf-8"))
    assert len(payload) <= 1024 and all(key.isdigit() for key in payload)
    assert all(-100.0 <= value <= 100.0 for value in payload.values())
    bias = torch.zeros(vector.vocab_size)
    for key, value in payload.items():
        bias[int(key)] = value
    got = setting["scores"] + bias
    torch.testing.assert_close(got, expected(vector, setting["scores"], mu, [int(k) for k in payload], clamp=True))
    with pytest.raises(InvalidOptionError, match="at most 1024"):
        export_bias(vector, "logit-bias", top_k=1025)


def test_the_output_says_what_the_export_drops(setting: dict[str, Any]) -> None:
    notes = " ".join(export_bias(setting["vector"], "logit-bias", mu=-1.0).notes)
    for words in ("per-step confidence mask", "dynamic mode", "adapter"):
        assert words in notes


def concentrated() -> SteeringVector:
    """A vector whose L1 mass is spread so that its top entry carries 30%: v = (3, -2, 1, 1, 1, 1, 1, 0, ...)."""
    v = torch.zeros(99)
    v[:7] = torch.tensor([3.0, -2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    config = dataclasses.replace(make_vector().config, task_vector_sha256="")
    return SteeringVector(task_vector=v, config=config)


def test_refuses_an_export_that_keeps_too_little_mass_unless_forced() -> None:
    vector = concentrated()
    with pytest.raises(InvalidOptionError) as info:
        export_bias(vector, "logit-bias", top_k=1, mu=1.0)
    assert str(info.value) == (
        "the top 1 of 7 entries carry 30.0% of the vector's L1 mass, below the 50% threshold: the logit-bias export "
        "would drop most of the steering — raise --top-k (logit-bias allows at most 1024), or pass --force to "
        "export it anyway"
    )
    assert export_bias(vector, "logit-bias", top_k=1, mu=1.0, force=True).bias == {0: 3.0}
    assert export_bias(vector, "logit-bias", top_k=2, mu=1.0).l1_fraction == pytest.approx(0.5)
    with pytest.raises(InvalidOptionError, match="zero everywhere"):
        export_bias(vector, "sequence-bias", mu=0.0)
    with pytest.raises(InvalidOptionError, match="unknown export format"):
        export_bias(vector, "gguf")


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_json_equals_the_library_result(setting: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "logit_bias.json"
    result = invoke("export", setting["folder"], "--format", "logit-bias", "--top-k", 8, "--mu", -40, "--out", out,
                    "--json", "--force")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)["data"]
    library = export_bias(setting["vector"], "logit-bias", top_k=8, mu=-40.0, force=True)
    assert data == {**json.loads(json.dumps(library.to_dict())), "file": str(out)}
    assert json.loads(out.read_text(encoding="utf-8")) == data["payload"]

    again = invoke("export", setting["folder"], "--format", "logit-bias", "--top-k", 8, "--out", out, "--json")
    assert again.exit_code == 1 and json.loads(again.stdout)["error"]["code"] == "artifact_exists"

    human = invoke("export", setting["folder"], "--format", "sequence-bias", "--mu", -40)
    assert human.exit_code == 0, human.output
    assert "carry 100.0% of the vector's L1 mass" in human.stdout and "adapter" in human.stdout


def test_cli_refusal_is_one_line_with_a_hint(tmp_path: Path) -> None:
    folder = concentrated().save(tmp_path / "vector")
    result = invoke("export", folder, "--format", "logit-bias", "--top-k", 1, "--mu", 1, "--json")
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error == {
        "code": "invalid_option",
        "message": "the top 1 of 7 entries carry 30.0% of the vector's L1 mass, below the 50% threshold: the "
        "logit-bias export would drop most of the steering",
        "hint": "raise --top-k (logit-bias allows at most 1024), or pass --force to export it anyway",
    }


def test_an_export_into_a_model_folder_keeps_its_generation_config(setting: dict[str, Any], tmp_path: Path) -> None:
    """issue 28: --out MODEL_DIR --force replaced generation_config.json wholesale (eos/bos/pad ids lost)."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    config = {"bos_token_id": 1, "eos_token_id": [2, 7], "pad_token_id": 0, "temperature": 0.6, "do_sample": True}
    (model_dir / "generation_config.json").write_text(json.dumps(config), encoding="utf-8")
    result = invoke("export", setting["folder"], "--format", "sequence-bias", "--mu", -40, "--out", model_dir,
                    "--force", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    written = json.loads((model_dir / "generation_config.json").read_text(encoding="utf-8"))
    payload = export_bias(setting["vector"], "sequence-bias", mu=-40.0).payload()
    assert written == {**config, **payload}
    assert sorted(p.name for p in model_dir.iterdir()) == ["generation_config.json"]  # no temporary file left
    from transformers import GenerationConfig

    loaded = GenerationConfig.from_pretrained(model_dir)
    assert loaded.eos_token_id == [2, 7] and loaded.sequence_bias is not None


def test_an_export_never_writes_through_a_link_into_a_folder_or_under_a_file(
    setting: dict[str, Any], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{}", encoding="utf-8")
    link = tmp_path / "logit_bias.json"
    link.symlink_to(elsewhere)
    folder_in_the_way = tmp_path / "d"
    (folder_in_the_way / "logit_bias.json").mkdir(parents=True)
    a_file = tmp_path / "FILE"
    a_file.write_text("x", encoding="utf-8")
    export = export_bias(setting["vector"], "logit-bias", top_k=8, mu=-40.0, force=True)
    cases = [
        (link, "is a link: an export never writes through one"),
        (folder_in_the_way, "logit_bias.json' is a folder"),
        (a_file / "x.json", "it is a file, not a folder"),
    ]
    for out, message in cases:
        with pytest.raises(InvalidOptionError, match=message):
            export.write(out)
        result = invoke("export", setting["folder"], "--format", "logit-bias", "--top-k", 8, "--mu", -40, "--out",
                        out, "--force", "--json")  # fmt: skip
        assert result.exit_code == 1 and message in json.loads(result.stdout)["error"]["message"]
    assert elsewhere.read_text(encoding="utf-8") == "{}"  # the link's target is untouched


def test_several_vectors_export_as_one_composed_bias(setting: dict[str, Any], tmp_path: Path) -> None:
    from steerkit.compose import compose
    from steerkit.steering import Steering

    config = dataclasses.replace(setting["vector"].config, task_vector_sha256="")
    other = SteeringVector(task_vector=concentrated().task_vector, config=config).save(tmp_path / "other")
    result = invoke("export", setting["folder"], other, "--mu", -40, "--mu", 2, "--format", "sequence-bias",
                    "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)["data"]
    both = compose(
        [Steering(setting["vector"], "static", mu=-40.0), Steering(SteeringVector.load(other), "static", 2.0)]
    )
    library = export_bias(both, "sequence-bias")
    assert data == {**json.loads(json.dumps(library.to_dict())), "file": None, "composed_of": [
        {"vector": str(setting["folder"]), "mu": -40.0}, {"vector": str(other), "mu": 2.0}]}  # fmt: skip
    human = invoke("export", setting["folder"], other, "--mu", -40, "--mu", 2, "--format", "sequence-bias")
    assert f"at the sum -40·{setting['folder']} + 2·{other}" in human.stdout.replace("\n", "")
    wrong = invoke("export", setting["folder"], other, "--mu", 1, "--format", "logit-bias")
    assert wrong.exit_code == 1 and "1 --mu for 2 vectors" in wrong.output and "one --mu per vector" in wrong.output
