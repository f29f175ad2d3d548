"""The lm-evaluation-harness model type ``steerkit`` (steerkit.lm_eval) on a tiny random model and a local task.

At μ = 0 its loglikelihoods equal lm-eval's own ``hf`` model with ``peft=<adapter>``; steered (static, dynamic)
they equal steerkit's own option scores (:func:`steerkit.scoring.collect_option_terms`), and generate_until
decodes exactly as :meth:`steerkit.SteeredModel.generate`. Everything runs offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("lm_eval")

from test_decode import hand_vector
from tiny import make_vector, tiny_llama, tiny_lora, tiny_tokenizer

import steerkit
from steerkit import svdecode
from steerkit.errors import AdapterError, IncompatibleModelError, InvalidOptionError
from steerkit.readers import load_items
from steerkit.scoring import collect_option_terms
from steerkit.steering import Steering

TASK_DIR = Path(__file__).resolve().parent / "data" / "lm_eval"
TASK = "steerkit_tiny"
MUS = {"static": -40.0, "dynamic": -3.0}  # strong enough to move the tiny model's scores and greedy tokens


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A base model folder, the LoRA (warm) model, its adapter folder and a vector folder carrying the adapter."""
    root = tmp_path_factory.mktemp("lm-eval")
    base, tokenizer = tiny_llama(sharpness=20), tiny_tokenizer()
    base.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    warm = tiny_lora(base)
    warm.save_pretrained(root / "adapter")
    vector = hand_vector(warm, tokenizer)
    vector.save(root / "vector")
    return {"root": root, "warm": warm, "tokenizer": tokenizer, "vector": vector}


@pytest.fixture
def offline(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline, datasets' cache in a temporary folder, the task folder as working directory (its data_files)."""
    import datasets.config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tiny["root"] / "datasets")
    monkeypatch.chdir(TASK_DIR)
    return TASK_DIR


def evaluate(model: str, model_args: str) -> list[list[float]]:
    """lm-eval's ``simple_evaluate`` on the tiny task: per document, the loglikelihood of each choice."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(TASK_DIR), include_defaults=False),  # lm-eval's own: 6 s
        device="cpu",
        batch_size=4,
        log_samples=True,
    )
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    return [[float(r[0][0]) for r in s["resps"]] for s in samples]


def steerkit_scores(tiny: dict[str, Any], steering: Steering | None) -> list[list[float]]:
    items = load_items(TASK_DIR / "tiny_mc.jsonl")
    terms = collect_option_terms(tiny["warm"], items, tokenizer=tiny["tokenizer"], steering=steering)
    return [list(map(float, row["choices"])) for row in terms.item_scores()]


def flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


def args(tiny: dict[str, Any], **extra: Any) -> str:
    root = tiny["root"]
    pairs = {"pretrained": root / "model", "vector": root / "vector", **extra}
    return ",".join(f"{k}={v}" for k, v in pairs.items())


def test_importing_the_module_registers_the_model_type() -> None:
    from lm_eval.api.registry import get_model

    from steerkit.lm_eval import SteerkitLM, register

    register()  # idempotent
    assert get_model("steerkit") is SteerkitLM


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mu_zero_equals_lm_evals_hf_model_with_the_adapter(tiny: dict[str, Any], offline: Path) -> None:
    reference = evaluate("hf", f"pretrained={tiny['root'] / 'model'},peft={tiny['root'] / 'adapter'}")
    for extra in ({"mode": "warm"}, {"mode": "static", "mu": 0}, {"mode": "dynamic", "mu": 0.0}):
        got = evaluate("steerkit", args(tiny, **extra))
        assert flat(got) == pytest.approx(flat(reference), abs=1e-5), extra
    assert flat(reference) == pytest.approx(flat(steerkit_scores(tiny, None)), abs=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("mode", "mu"), MUS.items())
def test_steered_loglikelihoods_equal_steerkits_option_scores(
    tiny: dict[str, Any], offline: Path, mode: str, mu: float
) -> None:
    got = evaluate("steerkit", args(tiny, mode=mode, mu=mu))
    want = steerkit_scores(tiny, Steering(tiny["vector"], mode=mode, mu=mu))
    assert flat(got) == pytest.approx(flat(want), abs=1e-5)
    warm = steerkit_scores(tiny, None)
    assert max(abs(a - b) for a, b in zip(flat(got), flat(warm))) > 1e-2  # steering moved the scores


@pytest.fixture(scope="module")
def lms(tiny: dict[str, Any]) -> dict[str, Any]:
    import warnings

    from steerkit.lm_eval import SteerkitLM

    root = tiny["root"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            mode: SteerkitLM(pretrained=str(root / "model"), vector=str(root / "vector"), mode=mode, mu=m, device="cpu")
            for mode, m in MUS.items()
        }


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_model_call_steers_every_position_without_the_filter(
    tiny: dict[str, Any], lms: dict[str, Any], mode: str
) -> None:
    lm, vector = lms[mode], tiny["vector"]
    ids = torch.tensor([tiny["tokenizer"].encode("hello there, cat")])
    with torch.no_grad():
        warm = tiny["warm"](ids).logits.float()
        with tiny["warm"].disable_adapter():
            base = tiny["warm"](ids).logits.float()
    direction, _ = svdecode.steering_direction(
        warm,
        base_logits=base if mode == "dynamic" else None,
        static_vector=vector.task_vector if mode == "static" else None,
        alpha=vector.config.alpha,
    )
    got = lm._model_call(ids)
    assert got.shape == warm.shape and torch.isfinite(got).all()  # no −inf filter
    torch.testing.assert_close(got, warm + MUS[mode] * direction, atol=1e-5, rtol=1e-5)

    from lm_eval.api.instance import Instance

    text = "the cat sat on the mat"
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    tokens = torch.tensor([[lm.prefix_token_id, *tiny["tokenizer"].encode(text)]])
    logp = torch.log_softmax(lm._model_call(tokens[:, :-1]), dim=-1)
    assert rolling == pytest.approx(float(logp.gather(-1, tokens[:, 1:, None]).sum()), abs=1e-4)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_generate_until_decodes_with_the_steering_processor(
    tiny: dict[str, Any], lms: dict[str, Any], mode: str
) -> None:
    from lm_eval.api.instance import Instance

    prompt, tok = "Q: what is 2+2? A:", tiny["tokenizer"]
    request = Instance("generate_until", {}, (prompt, {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}), 0)
    (got,) = lms[mode].generate_until([request])
    ids = torch.tensor([tok.encode(prompt)])
    with steerkit.attach(tiny["vector"], tiny["warm"], mode=mode, mu=MUS[mode], tokenizer=tok) as steered:
        out = steered.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
    want = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n\n")[0]
    assert got == want
    plain = tiny["warm"].generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    assert out.tolist() != plain.tolist()  # the steering changed what greedy decoding picks


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_default_mode_is_the_recommended_setting_as_attach_reads_it(tiny: dict[str, Any]) -> None:
    import dataclasses

    from steerkit.lm_eval import SteerkitLM

    def recommending(setting: str, mode: str | None, mu: float) -> Any:
        rec = {"setting": setting, "mode": mode, "rule": None if mode is None else "fit", "mu": mu}
        validation = {"recommended": rec, "reason": "test", "candidates": []}
        vector = tiny["vector"]
        return dataclasses.replace(vector, config=dataclasses.replace(vector.config, validation=validation))

    model = str(tiny["root"] / "model")
    ids = torch.tensor([tiny["tokenizer"].encode("the cat sat on the")])
    cases = {
        "static/fit": (recommending("static/fit", "static", -40.0), "static", -40.0),
        "warm": (recommending("warm", None, 0.0), "warm", 0.0),
        "base": (recommending("base", None, 0.0), "base", 0.0),
        "no validation": (tiny["vector"], "dynamic", tiny["vector"].mu),
    }
    for name, (vector, mode, mu) in cases.items():
        lm = SteerkitLM(pretrained=model, vector=vector, device="cpu", batch_size=2)
        assert (lm.steerkit_mode, lm.steerkit_mu) == (mode, pytest.approx(mu)), name
        spec = steerkit.Steering.recommended(vector)
        with torch.no_grad():
            want = steerkit_logits(tiny, spec, ids)
        torch.testing.assert_close(lm._model_call(ids), want, atol=1e-5, rtol=1e-5, msg=name)
        assert lm.get_model_info()["steerkit_mode"] == mode


def steerkit_logits(tiny: dict[str, Any], spec: Steering, ids: torch.Tensor) -> torch.Tensor:
    """The logits ``spec`` scores with, computed by hand on the warm model (base: the adapter off)."""
    warm_model = tiny["warm"]
    if spec.setting == "base":
        with warm_model.disable_adapter():
            return warm_model(ids).logits.float()
    warm = warm_model(ids).logits.float()
    with warm_model.disable_adapter():
        base = warm_model(ids).logits.float()
    direction, keep = svdecode.steering_direction(
        warm,
        base_logits=base if spec.mode == "dynamic" else None,
        static_vector=spec.vector.task_vector if spec.mode == "static" else None,
        alpha=spec.vector.config.alpha,
    )
    return svdecode.steer(warm, direction, keep, float(spec.strength), filter_masked=False)


def test_model_info_names_the_vector(tiny: dict[str, Any], lms: dict[str, Any], offline: Path) -> None:
    info = lms["dynamic"].get_model_info()
    vector = tiny["vector"]
    assert info["steerkit_vector"] == str(tiny["root"] / "vector")
    assert info["steerkit_task_vector_sha256"] == vector.config.task_vector_sha256
    assert info["steerkit_mode"] == "dynamic" and info["steerkit_mu"] == MUS["dynamic"]
    assert {"steerkit_vector_revision", "steerkit_vector_commit", "steerkit_version"} <= set(info)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_refusals(tiny: dict[str, Any], tmp_path: Path) -> None:
    from steerkit.lm_eval import SteerkitLM

    model = str(tiny["root"] / "model")
    wide = make_vector(vocab_size=120)
    with pytest.raises(IncompatibleModelError, match="logits width is 99"):
        SteerkitLM(pretrained=model, vector=wide, mode="static", device="cpu")
    with pytest.raises(InvalidOptionError, match="unknown steerkit mode"):
        SteerkitLM(pretrained=model, vector=tiny["vector"], mode="off", device="cpu")
    with pytest.raises(InvalidOptionError, match="takes no mu"):
        SteerkitLM(pretrained=model, vector=tiny["vector"], mode="warm", mu=1.0, device="cpu")
    with pytest.raises(InvalidOptionError, match="peft="):
        SteerkitLM(pretrained=model, vector=tiny["vector"], peft=str(tiny["root"] / "adapter"), device="cpu")
    with pytest.raises(AdapterError, match="no adapter"):
        SteerkitLM(pretrained=model, vector=make_vector(), mode="dynamic", device="cpu")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"strict": "ture"}, "strict='ture' is neither true nor false"),
        ({"strict": "enabled"}, "strict='enabled' is neither true nor false"),
        ({"filter_masked": "maybe"}, "filter_masked='maybe' is neither true nor false"),
        ({"mu": "abc"}, "mu='abc' is not a number"),
        ({"alpha": "abc"}, "alpha='abc' is not a number"),
        ({"mode": "warm", "alpha": "nan"}, "alpha must be in \\[0, 1\\], got nan"),
        ({"vector_revision": "v2"}, "vector_revision='v2' names a Hub revision, but .* is a local folder"),
    ],
)
def test_model_args_never_fail_open(tiny: dict[str, Any], extra: dict[str, str], message: str) -> None:
    """Each of these turned a check off, or ended in a bare ValueError, or was recorded wrong (issue 28)."""
    from steerkit.lm_eval import SteerkitLM

    kwargs = {"pretrained": str(tiny["root"] / "model"), "vector": str(tiny["root"] / "vector"), "device": "cpu"}
    with pytest.raises(InvalidOptionError, match=message):
        SteerkitLM(**(kwargs | extra))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_command_line_runs_the_model_type(tiny: dict[str, Any], offline: Path, tmp_path: Path) -> None:
    from steerkit.lm_eval import main

    out = tmp_path / "results"
    main(
        [
            "run",
            "--model",
            "steerkit",
            "--model_args",
            args(tiny, mode="static", mu=-40.0),
            "--tasks",
            TASK,
            "--include_path",
            str(TASK_DIR),
            "--device",
            "cpu",
            "--batch_size",
            "4",
            "--output_path",
            str(out),
        ]
    )
    (written,) = out.rglob("results*.json")
    result = json.loads(written.read_text(encoding="utf-8"))
    assert result["config"]["steerkit_mode"] == "static"
    assert result["config"]["steerkit_task_vector_sha256"] == tiny["vector"].config.task_vector_sha256
    assert 0.0 <= result["results"][TASK]["acc,none"] <= 1.0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pretrained_takes_a_packaged_models_name(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 30: pretrained=SmolLM2-135M-Instruct (the name every steerkit command accepts) failed in model_args."""
    import steerkit.models
    from steerkit.lm_eval import SteerkitLM

    asked: list[str] = []

    def folder(name: str, **_: Any) -> Path:
        asked.append(name)
        return Path(tiny["root"] / "model")  # the tiny model stands in for the packaged one

    monkeypatch.setattr(steerkit.models, "model_dir", folder)
    lm = SteerkitLM(pretrained="SmolLM2-135M-Instruct", vector=tiny["vector"], mode="static", device="cpu")
    assert asked == ["SmolLM2-135M-Instruct"] and lm.steerkit_mode == "static"


def test_a_composition_scores_as_steerkit_with_the_summed_vector(tiny: dict[str, Any], offline: Path) -> None:
    import steerkit.lm_eval  # noqa: F401  (registers the model type)
    from steerkit.compose import compose

    second = hand_vector(tiny["warm"], tiny["tokenizer"], texts=("a quick brown fox", "jumps over the lazy dog"))
    second.save(tiny["root"] / "second")
    both = args(tiny, vector=f"{tiny['root'] / 'vector'}|{tiny['root'] / 'second'}", mu="-40|25")
    got = evaluate("steerkit", both)
    summed = compose([Steering(tiny["vector"], "static", mu=-40.0), Steering(second, "static", mu=25.0)])
    assert flat(got) == pytest.approx(flat(steerkit_scores(tiny, Steering(summed, "static", mu=1.0))), abs=1e-4)
    assert flat(got) != pytest.approx(flat(steerkit_scores(tiny, None)), abs=1e-3)  # it steered


def test_a_composition_takes_one_mu_per_vector_and_static_mode_only(tiny: dict[str, Any]) -> None:
    from steerkit.lm_eval import SteerkitLM

    two = f"{tiny['root'] / 'vector'}|{tiny['root'] / 'vector'}"
    kwargs = {"pretrained": str(tiny["root"] / "model"), "vector": two, "device": "cpu"}
    with pytest.raises(InvalidOptionError, match=r"mu='1' gives 1 strengths for the 2 vectors"):
        SteerkitLM(**kwargs, mu="1")
    with pytest.raises(InvalidOptionError, match="static mode only, not mode=dynamic"):
        SteerkitLM(**kwargs, mode="dynamic")
    lm = SteerkitLM(**kwargs, mu="-1|")  # an empty μ: that vector's mu_static
    expected = (-1.0 + tiny["vector"].mu_static) * tiny["vector"].task_vector.double()
    assert torch.equal(lm.steerkit_vector.task_vector, expected.float()) and lm.steerkit_mode == "static"
    assert lm.get_model_info()["steerkit_vector"] == two
